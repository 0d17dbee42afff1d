"""The registry of graded exercises: what an exercise is, the fixed inputs' helpers, the comparison.

:class:`Exercise` describes one graded function (inputs, how to call it, tolerance, typical
mistakes); :data:`EXERCISES` holds them all in the order the grader reports them, filled by
``exercises_losses``, ``exercises_pixels``, ``exercises_layers`` and ``exercises_attribution`` (imported by
:mod:`cs_utils.course.grading`). :func:`rel_error` is CS231n's relative error, used by every check.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data import DATA_DIR

__all__ = ["CHECKS_DIR", "EXERCISES", "PACKAGE", "Context", "Exercise", "Mistake", "exercise_names",
           "get_exercise", "register", "rel_error"]

CHECKS_DIR = DATA_DIR / "checks"
PACKAGE = "cs_utils"


def rel_error(x, y) -> float:
    """``max(|x - y| / max(1e-8, |x| + |y|))`` over all elements (CS231n's relative error)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))
    err = np.where(x == y, 0.0, err)  # equal infinities agree
    if np.isnan(err).any():
        return math.inf
    return float(err.max())


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Mistake:
    """A typical wrong implementation: ``fn`` has the exercise's signature and returns what
    that mistake returns; its outputs are stored in the golden file so a FAIL can name it."""

    key: str
    hint: str
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    """One graded function.

    ``make_inputs()`` builds the fixed inputs (a dict of numpy arrays, stored in the golden
    file); ``run(fn, inputs, ctx)`` calls a candidate ``fn`` on them (tensors made from the
    stored arrays) and returns a dict of outputs. ``hint`` names the usual mistakes when no
    stored mistake matches.
    """

    name: str
    module: str
    function: str
    make_inputs: Callable[[], dict]
    run: Callable
    hint: str
    tolerance: float = 1e-6
    mistakes: tuple[Mistake, ...] = ()
    points: int = 1
    uses_model: bool = False
    vectorize_hint: str = "vectorise: process the inputs in batches, not one at a time"

    @property
    def path(self) -> str:
        return f"{PACKAGE}/{self.module}.py"

    def reference(self) -> Callable:
        """The function importable from ``cs_utils.<module>`` (the solution in the solution tree)."""
        return getattr(importlib.import_module(f"{PACKAGE}.{self.module}"), self.function)


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    EXERCISES[exercise.name] = exercise
    return exercise


def exercise_names() -> list[str]:
    return list(EXERCISES)


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        import difflib

        close = difflib.get_close_matches(str(name), EXERCISES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(EXERCISES)}.{hint}")
    return EXERCISES[name]


class Context:
    """What ``run`` may need besides the inputs: a fresh pretrained model per call."""

    def model(self, dtype=torch.float64) -> torch.nn.Module:
        from ..models import load_model

        return load_model("efficientnet_lite0").to(dtype)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))


def _photo(name: str, size: int) -> np.ndarray:
    """A sample photo as uint8 (3, size, size): stored exactly, used as float64 / 255."""
    from ..image import load_image

    x = load_image(name, size)[0]
    return np.round(x.numpy() * 255).astype(np.uint8)


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))



# ---- helpers of the model-based exercises

# ---- model-based exercises: real photos through the pretrained EfficientNet-Lite0 in float64

PHOTO_SIZE = 48


def _photos(*names, size=PHOTO_SIZE):
    return np.stack([_photo(name, size) for name in names])


def _images(array, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(array).to(dtype) / 255.0


def _accepted(fn, **kwargs) -> dict:
    """The keyword arguments ``fn`` accepts (e.g. ``progress``, which a student's version may lack)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _input_grad(model, x, target, kind="score"):
    """d(objective)/dx for a batch, with the objective of a correct or a typical wrong version."""
    ### BEGIN SOLUTION
    x = x.detach().clone().requires_grad_(True)
    scores = model(x)
    target = torch.as_tensor(target).reshape(-1).expand(x.shape[0])
    if kind == "score":
        objective = scores.gather(1, target[:, None]).sum()
    elif kind == "probability":
        objective = scores.softmax(dim=1).gather(1, target[:, None]).sum()
    else:  # "loss": the cross-entropy of the target class
        objective = torch.nn.functional.cross_entropy(scores, target, reduction="sum")
    (grad,) = torch.autograd.grad(objective, [x])
    return grad
    ### END SOLUTION


