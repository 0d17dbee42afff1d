"""History: what an iterative computation recorded, step by step, and one way to plot it.

Every loop in the package returns a :class:`History` (or a subclass that adds its own
per-run results): the image optimisations (``optimize_image``, DeepDream, inversion,
texture and style), the attacks (:class:`cs_utils.adversarial.AttackHistory`), fast-style
training (:class:`cs_utils.fast_style_training.FastStyleHistory`) and classifier training
(:class:`cs_utils.small_cnn.TrainingHistory`). They share one contract:

* a *series* is a list with one number per step, found by name with :meth:`History.series`
  (``"loss"``, ``"objective"``, a subclass's own lists, or anything in ``extra``);
* :meth:`History.smoothed` is a running mean of a series;
* :meth:`History.plot` draws series against the step, accepts ``ax=`` and returns the
  matplotlib Figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar

__all__ = ["History", "running_mean"]


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last ``window`` values at every position (fewer at the start)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"the smoothing window must be an int >= 1 (steps), got {window!r}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


@dataclass
class History:
    """What happened during an optimisation (and the base of every other history).

    ``loss`` holds the total minimised value (objective plus penalties) at every step
    (for L-BFGS: every evaluation), ``objective`` the objective alone, ``extra`` the
    terms the objective tracks (``objective.track("style")``, one value per evaluation)
    and any series a technique adds (e.g. ``"octave"``, ``"confidence"``);
    ``steps`` counts the steps taken,
    ``stopped_early`` says whether a stopping rule ended the run, ``seconds`` is the
    wall-clock time.
    """

    loss: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    extra: dict[str, list] = field(default_factory=dict)
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    #: The series :meth:`plot` draws when none is named.
    default_series: ClassVar[tuple[str, ...]] = ("loss",)
    #: Series drawn on a second y axis when the default series are plotted.
    twin_series: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`plot` uses a log scale unless told otherwise.
    default_logy: ClassVar[bool] = False

    def record(self, name: str, value) -> None:
        """Append ``value`` to the series ``extra[name]``."""
        self.extra.setdefault(name, []).append(value)

    def series_names(self) -> list[str]:
        """The names :meth:`series` knows: list fields with one value per step, then ``extra``'s."""
        own = [f.name for f in fields(self) if f.name != "extra" and isinstance(getattr(self, f.name), list)]
        return own + [name for name in self.extra if name not in own]

    def series(self, name: str) -> list[float]:
        """The values of one series, by name; a ``KeyError`` lists the names there are."""
        if name != "extra" and isinstance(getattr(self, name, None), list):
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(f"no series {name!r} in this {type(self).__name__}; "
                       f"choose one of {', '.join(self.series_names())}")

    def smoothed(self, name: str = "loss", smooth: int = 50) -> list[float]:
        """A running mean of the series ``name`` over the last ``smooth`` steps."""
        return running_mean(self.series(name), smooth)

    def final(self, name: str = "loss", last: int = 1) -> float:
        """The mean of the last ``last`` values of the series ``name`` (NaN if it is empty)."""
        values = self.series(name)[-last:]
        return sum(values) / len(values) if values else math.nan

    def plot(self, ax=None, *, series: str | Sequence[str] | None = None, smooth: int = 1,
             logy: bool | None = None, title: str | None = None):
        """Plot series against the step and return the matplotlib Figure.

        ``ax``: the Axes to draw in (a new figure if ``None``). ``series``: one name or
        several (default: :attr:`default_series`, plus :attr:`twin_series` on a second
        y axis). ``smooth``: a running mean over that many steps (the raw values of the
        first series are drawn faintly behind). ``logy``: a log scale (default: the
        history's own choice). ``title``: defaults to the series and the number of steps.
        """
        import matplotlib.pyplot as plt

        names = list(self.default_series) if series is None else (
            [series] if isinstance(series, str) else list(series))
        twins = list(self.twin_series) if series is None else []
        for name in names + twins:
            self.series(name)  # a clear KeyError before anything is drawn
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3.2))
        fig = ax.figure
        count = len(self.series(names[0])) if names else 0
        for i, name in enumerate(names):
            values = self.series(name)
            steps = range(1, len(values) + 1)
            if smooth > 1:
                if i == 0:
                    ax.plot(steps, values, color="0.8", lw=0.8, label=f"{name} (each step)")
                ax.plot(steps, running_mean(values, smooth), color=f"C{i}",
                        label=f"{name} (mean of {smooth})")
            else:
                ax.plot(steps, values, color=f"C{i}", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(names[0] if len(names) == 1 else "value")
        if self.default_logy if logy is None else logy:
            ax.set_yscale("log")
        if len(names) > 1 or smooth > 1:
            ax.legend(fontsize=8)
        for j, name in enumerate(twins):
            twin = ax.twinx()
            values = self.series(name)
            shown = running_mean(values, smooth) if smooth > 1 else values
            twin.plot(range(1, len(values) + 1), shown, color=f"C{len(names) + j}", label=name)
            twin.set_ylabel(name, color=f"C{len(names) + j}")
        ax.set_title(title or f"{', '.join(names + twins)} over {count} steps")
        ax.grid(alpha=0.3)
        return fig
