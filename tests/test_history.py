"""History: one series lookup, one running mean, one plot contract for every loop's record."""

import math
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pytest

from cs_utils.history import History, running_mean


def test_running_mean_by_hand():
    assert running_mean([2.0, 4.0, 6.0, 8.0], 2) == [2.0, 3.0, 5.0, 7.0]
    assert running_mean([1.0, 2.0, 3.0], 1) == [1.0, 2.0, 3.0]
    assert running_mean([3.0, 6.0], 10) == [3.0, 4.5]
    with pytest.raises(ValueError, match="window"):
        running_mean([1.0], 0)


def test_series_are_found_by_name_with_a_clear_error():
    h = History(loss=[3.0, 2.0], objective=[1.0, 0.5])
    h.record("style", 7.0)
    assert h.series("loss") == [3.0, 2.0] and h.series("style") == [7.0]
    assert h.series_names() == ["loss", "objective", "style"]
    assert h.final("loss", last=2) == 2.5 and math.isnan(History().final())
    with pytest.raises(KeyError, match="choose one of loss, objective, style"):
        h.series("content")


@dataclass
class _TwoSeries(History):
    accuracy: list = field(default_factory=list)
    twin_series = ("accuracy",)


def test_plot_returns_the_figure_draws_in_the_given_axes_and_smooths():
    h = _TwoSeries(loss=[4.0, 2.0, 0.0, 2.0], accuracy=[0.0, 0.5, 1.0, 1.0])
    fig, ax = plt.subplots()
    assert h.plot(ax=ax) is fig
    assert [list(line.get_ydata()) for line in ax.lines] == [[4.0, 2.0, 0.0, 2.0]]
    twin = [a for a in fig.axes if a is not ax][0]
    assert list(twin.lines[0].get_ydata()) == [0.0, 0.5, 1.0, 1.0]
    plt.close(fig)
    fig = h.plot(series=["loss"], smooth=2, logy=False, title="t")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_title() == "t"
    assert list(ax.lines[0].get_ydata()) == [4.0, 2.0, 0.0, 2.0]           # raw, faint
    assert list(ax.lines[1].get_ydata()) == [4.0, 3.0, 1.0, 1.0]           # running mean of 2
    plt.close(fig)
    with pytest.raises(KeyError, match="no series 'tv'"):
        h.plot(series="tv")
