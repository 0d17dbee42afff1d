"""Golden checks for the exercises: ``check("gram_matrix")`` says PASS or FAIL with a hint.

Every exercise is a function of ``cs_utils`` whose body the student writes (the
solution tree marks it with ``### BEGIN SOLUTION`` / ``### END SOLUTION``). The
registry :data:`EXERCISES` holds, for each one, fixed inputs (small seeded
tensors, or a real photo through the pretrained EfficientNet-Lite0 in float64),
how to call the function, a tolerance and the usual mistakes. The reference
outputs live in ``data/checks/<name>.npz``, written by::

    make checks        # cs_utils.grading.main(["--generate"]); python -m cs_utils.grading --generate

Regenerating on the same machine gives byte-identical files (fixed key order,
no timestamps, one thread). The outputs of typical wrong implementations are
stored next to the right ones, so a failing check names the mistake it sees.

In a notebook::

    cs_utils.grading.check("saliency_map")          # the function importable from cs_utils
    cs_utils.grading.check("saliency_map", my_fn)   # or any function with its signature

prints ``PASS saliency_map (rel. error 3.1e-07)`` or ``FAIL saliency_map (rel.
error 0.42): <hint>`` and raises ``AssertionError`` on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import math
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import DATA_DIR

__all__ = [
    "CHECKS_DIR",
    "EXERCISES",
    "CheckResult",
    "Exercise",
    "Mistake",
    "check",
    "evaluate",
    "exercise_names",
    "generate",
    "get_exercise",
    "load_golden",
    "rel_error",
    "write_npz",
]

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


def _register(exercise: Exercise) -> Exercise:
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
        from .models import load_model

        return load_model("efficientnet_lite0").to(dtype)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))


def _photo(name: str, size: int) -> np.ndarray:
    """A sample photo as uint8 (3, size, size): stored exactly, used as float64 / 255."""
    from .image import load_image

    x = load_image(name, size)[0]
    return np.round(x.numpy() * 255).astype(np.uint8)


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# ---- losses


def _gram_inputs():
    rng = _rng(0)
    return {"features": rng.standard_normal((2, 4, 5, 6))}


def _gram_run(fn, t, ctx):
    return {"normalized": fn(t["features"]), "unnormalized": fn(t["features"], normalize=False)}


def _gram_variant(scale):
    def wrong(features, normalize=True):
        from .losses import gram_matrix

        n, c, h, w = features.shape
        return gram_matrix(features, normalize=False) / (scale(n, c, h, w) if normalize else 1)
    return wrong


_register(Exercise(
    name="gram_matrix", module="losses", function="gram_matrix",
    make_inputs=_gram_inputs, run=_gram_run, tolerance=1e-6,
    hint="G[n] = F F^T with F = features[n] reshaped to (C, H*W), one Gram per image, "
         "divided by C*H*W when normalize is true",
    mistakes=(
        Mistake("no_normalization", "the normalised Gram matrix is not divided by C*H*W "
                "(check `if normalize:`)", _gram_variant(lambda n, c, h, w: 1)),
        Mistake("hw_only", "wrong normalisation of the Gram matrix: divide by C*H*W, not by H*W",
                _gram_variant(lambda n, c, h, w: h * w)),
        Mistake("nchw", "wrong normalisation of the Gram matrix: divide by C*H*W, not by N*C*H*W "
                "(each image has its own Gram)", _gram_variant(lambda n, c, h, w: n * c * h * w)),
    ),
))


def _content_inputs():
    rng = _rng(1)
    return {"features": rng.standard_normal((1, 3, 4, 5)), "target": rng.standard_normal((1, 3, 4, 5)),
            "weight": np.array(0.7)}


def _content_run(fn, t, ctx):
    return {"loss": fn(t["features"], t["target"], weight=float(t["weight"]))}


def _content_variant(kind):
    def wrong(features, target, weight=1.0):
        diff = features - target
        if kind == "mean":
            return weight * diff.pow(2).mean()
        if kind == "no_weight":
            return diff.pow(2).sum()
        return weight * diff.pow(2).sum().sqrt()
    return wrong


_register(Exercise(
    name="content_loss", module="losses", function="content_loss",
    make_inputs=_content_inputs, run=_content_run, tolerance=1e-6,
    hint="content loss = weight * sum((features - target)^2), a scalar tensor",
    mistakes=(
        Mistake("mean", "mean instead of sum over the squared differences", _content_variant("mean")),
        Mistake("no_weight", "the weight is not applied", _content_variant("no_weight")),
        Mistake("norm", "the L2 norm instead of the squared L2 norm (no square root)",
                _content_variant("norm")),
    ),
))


def _style_inputs():
    rng = _rng(2)
    f1, f2 = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((1, 4, 3, 3))
    return {"features_0": f1, "features_1": f2,
            "target_0": rng.standard_normal((1, 3, 3)) * 0.5,
            "target_1": rng.standard_normal((1, 4, 4)) * 0.5,
            "weights": np.array([0.6, 1.5])}


def _style_run(fn, t, ctx):
    features = [t["features_0"], t["features_1"]]
    targets = [t["target_0"], t["target_1"]]
    weights = [float(w) for w in t["weights"]]
    return {"loss": fn(features, targets, weights=weights),
            "loss_weight_2": fn(features, targets, weights=2.0)}


def _style_variant(kind):
    def wrong(features, target_grams, weights=1.0):
        from .losses import gram_matrix

        if isinstance(weights, (int, float)):
            weights = [float(weights)] * len(features)
        total = 0.0
        for f, a, w in zip(features, target_grams, weights):
            g = gram_matrix(f, normalize=kind != "unnormalized_gram")
            err = (g - a).pow(2)
            if kind == "sum":
                total = total + w * err.sum()
            else:
                total = total + (err.mean() if kind == "no_weights" else w * err.mean())
        return total
    return wrong


_register(Exercise(
    name="style_loss", module="losses", function="style_loss",
    make_inputs=_style_inputs, run=_style_run, tolerance=1e-6,
    hint="style loss = sum over layers of w_l * mean((gram_matrix(F_l) - A_l)^2) with the normalised "
         "Gram matrix; make gram_matrix pass first",
    mistakes=(
        Mistake("sum", "each layer's squared Gram error is summed; divide by the size of the Gram (mean)",
                _style_variant("sum")),
        Mistake("no_weights", "the per-layer weights are not applied", _style_variant("no_weights")),
        Mistake("unnormalized_gram", "the Gram matrices must be the normalised ones (gram_matrix(F), "
                "divided by C*H*W)", _style_variant("unnormalized_gram")),
    ),
))


def _tv_inputs():
    rng = _rng(3)
    return {"x": rng.uniform(0, 1, (2, 3, 6, 7)), "weight": np.array(0.3)}


def _tv_run(fn, t, ctx):
    x, weight = t["x"], float(t["weight"])
    return {"beta_2": fn(x, weight=weight), "beta_1.5": fn(x, weight=weight, beta=1.5)}


def _tv_variant(kind):
    def wrong(x, weight=1.0, beta=2.0):
        if kind == "separate":  # CS231n's anisotropic form over every row/column pair
            dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2)
            dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2)
            return weight * (dx.pow(beta / 2).sum() + dy.pow(beta / 2).sum())
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        squared = dx.pow(2) + dy.pow(2)
        if kind == "mean":
            return weight * (squared + (0 if beta == 2 else 1e-8)).pow(beta / 2).mean()
        return weight * squared.sum()  # beta ignored
    return wrong


_register(Exercise(
    name="tv_loss", module="losses", function="tv_loss",
    make_inputs=_tv_inputs, run=_tv_run, tolerance=1e-6,
    hint="tv = weight * sum over images, channels and the (H-1)x(W-1) pixels of (dx^2 + dy^2)^(beta/2), "
         "dx = x[..., :-1, 1:] - x[..., :-1, :-1], dy = x[..., 1:, :-1] - x[..., :-1, :-1]; use slicing, "
         "not loops",
    mistakes=(
        Mistake("separate", "dx^2 and dy^2 are summed separately over all rows/columns; the formula sums "
                "(dx^2 + dy^2)^(beta/2) over the pixels that have both a right and a lower neighbour",
                _tv_variant("separate")),
        Mistake("mean", "mean instead of sum over pixels", _tv_variant("mean")),
        Mistake("beta", "beta is ignored: raise (dx^2 + dy^2) to the power beta/2", _tv_variant("beta")),
    ),
))


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


def _saliency_inputs():
    return {"images": _photos("coffee", "imagenet_00"), "target": np.array([967, 243])}


def _saliency_run(fn, t, ctx):
    return {"saliency": fn(ctx.model(), _images(t["images"]), t["target"])}


def _saliency_variant(kind):
    def wrong(model, x, target):
        grad = _input_grad(model, x, target, "score" if kind in ("no_abs", "sum") else kind)
        if kind == "no_abs":
            return grad.amax(dim=1)
        if kind == "sum":
            return grad.abs().sum(dim=1)
        return grad.abs().amax(dim=1)
    return wrong


_register(Exercise(
    name="saliency_map", module="saliency", function="saliency_map",
    make_inputs=_saliency_inputs, run=_saliency_run, tolerance=1e-6, uses_model=True,
    hint="saliency = max over the 3 colour channels of |d score_target / d x|, with the unnormalised "
         "score (before the softmax), one gradient for the whole batch: result (N, H, W)",
    mistakes=(
        Mistake("no_abs", "forgot abs: take the absolute value of the gradient before the max over channels",
                _saliency_variant("no_abs")),
        Mistake("sum", "sum over the channels instead of the max over channels", _saliency_variant("sum")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _saliency_variant("probability")),
        Mistake("loss", "the gradient of the cross-entropy loss; use the unnormalised class score",
                _saliency_variant("loss")),
    ),
))


def _occlusion_inputs():
    # The model's top class for this photo at 48 px (p = 0.76): large drops, a well-conditioned map.
    return {"image": _photos("imagenet_05"), "target": np.array(488), "window": np.array(16),
            "stride": np.array(8), "batch_size": np.array(8), "grey": np.array(0.5)}


class _ForwardCounter:
    """Counts the forward passes of a model (a forward pre-hook, removed on exit)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(self._count)
        return self

    def _count(self, module, args):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


def _occlusion_run(fn, t, ctx):
    # float32: the reference keeps its drops in float32 buffers, so float64 inputs gain nothing
    model = ctx.model(torch.float32)
    x, target = _images(t["image"], torch.float32), int(t["target"])
    kwargs = dict(window=int(t["window"]), stride=int(t["stride"]), batch_size=int(t["batch_size"]))
    with _ForwardCounter(model) as counter:
        mean_fill = fn(model, x, target, **_accepted(fn, **kwargs, progress=False))
    grey = fn(model, x, target, **_accepted(fn, **kwargs, fill=float(t["grey"]), progress=False))
    return {"mean_fill": mean_fill, "grey_fill": grey, "calls_forward": counter.calls}


def _occlusion_variant(kind, batched=True):
    def wrong(model, x, target, *, window=32, stride=8, fill=None, batch_size=32, progress=True):
        from .saliency import occlusion_windows

        n, _, height, width = x.shape
        colour = x.mean(dim=(2, 3)) if fill is None else torch.full((n, 3), float(fill), dtype=x.dtype)
        window = window if isinstance(window, int) else window[0]
        if kind == "black":
            colour = torch.zeros_like(colour)
        with torch.no_grad():
            def score(images):
                out = model(images)
                return (out if kind == "score" else out.softmax(dim=1))[:, target]
            base = score(x)
            heat = torch.zeros(n, height, width, dtype=x.dtype)
            covered = torch.zeros(height, width, dtype=x.dtype)
            windows = occlusion_windows(height, width, window, stride)
            copies = x.repeat_interleave(len(windows), dim=0).reshape(n, len(windows), *x.shape[1:])
            for j, (top, left) in enumerate(windows):
                copies[:, j, :, top:top + window, left:left + window] = colour[:, :, None, None]
            if batched:
                scores = score(copies.flatten(0, 1)).reshape(n, len(windows))
            else:
                scores = torch.stack([score(copies[:, j]) for j in range(len(windows))], dim=1)
            for j, (top, left) in enumerate(windows):
                drop = scores[:, j] - base if kind == "sign" else base - scores[:, j]
                heat[:, top:top + window, left:left + window] += drop[:, None, None]
                covered[top:top + window, left:left + window] += 1
        return heat if kind == "sum" else heat / covered
    return wrong


_register(Exercise(
    name="occlusion_map", module="saliency", function="occlusion_map",
    make_inputs=_occlusion_inputs, run=_occlusion_run, tolerance=1e-3, uses_model=True,
    vectorize_hint="run the occluded copies through the model batch_size at a time (one batched forward "
                   "pass per batch), not one forward pass per window",
    hint="for every window position: drop = p(target | x) - p(target | x with the patch filled), softmax "
         "probabilities; each pixel gets the mean drop over the windows that cover it (occlusion_windows "
         "gives the positions; fill=None means each image's mean colour)",
    mistakes=(
        Mistake("score", "the drop of the unnormalised score; use the softmax probability",
                _occlusion_variant("score")),
        Mistake("sum", "the drops are summed; each pixel gets the mean over the windows covering it",
                _occlusion_variant("sum")),
        Mistake("sign", "the sign is flipped: drop = p(original) - p(occluded)", _occlusion_variant("sign")),
        Mistake("black", "fill=None means each image's mean colour, not black", _occlusion_variant("black")),
    ),
))


def _guided_inputs():
    rng = _rng(4)
    return {"grad_output": rng.standard_normal((2, 3, 4, 5)),
            "activation": np.clip(rng.standard_normal((2, 3, 4, 5)) * 5, 0, 6)}


def _guided_run(fn, t, ctx):
    return {"relu": fn(t["grad_output"], t["activation"]),
            "relu6": fn(t["grad_output"], t["activation"], upper=6.0)}


def _guided_variant(kind):
    def wrong(grad_output, activation, upper=None):
        if kind == "backprop":
            return grad_output * (activation > 0)
        if kind == "deconvnet":
            return grad_output.clamp(min=0)
        return grad_output.clamp(min=0) * (activation > 0)  # "upper" ignored
    return wrong


_register(Exercise(
    name="guided_relu_grad", module="saliency", function="guided_relu_grad",
    make_inputs=_guided_inputs, run=_guided_run, tolerance=1e-9,
    hint="guided backprop passes grad_output only where grad_output > 0 AND the unit was active "
         "(0 < activation, and activation < upper for a ReLU6)",
    mistakes=(
        Mistake("backprop", "that is plain backprop (mask by activation only): also zero the negative "
                "gradients", _guided_variant("backprop")),
        Mistake("deconvnet", "that is the deconvnet rule (positive gradients only): also zero where the unit "
                "was inactive (activation <= 0)", _guided_variant("deconvnet")),
        Mistake("upper", "for a ReLU6 (upper=6) a saturated unit (activation == upper) passes no gradient",
                _guided_variant("upper")),
    ),
))


def _fooling_inputs():
    return {"images": _photos("imagenet_01", "imagenet_02"), "target": np.array([6, 130]),
            "step_size": np.array(0.5)}


def _fooling_run(fn, t, ctx):
    x = _images(t["images"])
    out = fn(ctx.model(), x, t["target"].tolist(), step_size=float(t["step_size"]))
    return {"step": out - x}


def _fooling_variant(kind):
    def wrong(model, x, target, *, step_size=0.25):
        grad = _input_grad(model, x, target, "loss" if kind == "loss" else "score")
        if kind == "loss":
            grad = -grad
        if kind == "sign":
            return x + step_size * grad.sign()
        if kind == "batch_norm":
            return x + step_size * grad / grad.norm()
        if kind == "no_norm":
            return x + step_size * grad
        norms = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return x + step_size * grad / norms
    return wrong


_register(Exercise(
    name="fooling_step", module="adversarial", function="fooling_step",
    make_inputs=_fooling_inputs, run=_fooling_run, tolerance=1e-6, uses_model=True,
    hint="x + step_size * g / ||g||_2 with g = d score_target / d x (unnormalised score), one L2 norm per "
         "image, no clamping",
    mistakes=(
        Mistake("sign", "that is the sign of the gradient (FGSM); divide g by its L2 norm instead",
                _fooling_variant("sign")),
        Mistake("batch_norm", "one norm for the whole batch; normalise each image's gradient by its own "
                "L2 norm (g.flatten(1).norm(dim=1))", _fooling_variant("batch_norm")),
        Mistake("no_norm", "the gradient is not normalised: divide by its L2 norm",
                _fooling_variant("no_norm")),
        Mistake("loss", "descending the cross-entropy is not the same step: ascend the unnormalised score",
                _fooling_variant("loss")),
    ),
))


def _class_viz_inputs():
    rng = _rng(8)
    noise = np.clip(0.5 + 0.1 * rng.standard_normal((2, 3, PHOTO_SIZE, PHOTO_SIZE)), 0, 1)
    return {"image": np.round(noise * 255).astype(np.uint8), "target": np.array([76, 1]),
            "learning_rate": np.array(3.0),
            "l2_reg": np.array(0.05)}


def _class_viz_run(fn, t, ctx):
    x = _images(t["image"])
    out = fn(ctx.model(), x, t["target"].tolist(), learning_rate=float(t["learning_rate"]),
             l2_reg=float(t["l2_reg"]))
    return {"step": out - x}


def _class_viz_variant(kind):
    def wrong(model, img, target, *, learning_rate=3.0, l2_reg=4e-3):
        x = img.detach().clone().requires_grad_(True)
        targets = torch.as_tensor(target).reshape(-1).expand(x.shape[0])
        scores = model(x)
        if kind == "probability":
            scores = scores.softmax(dim=1)
        score = scores.gather(1, targets[:, None]).sum()
        centre = 0.0 if kind == "around_zero" else 0.5
        penalty = 0.0 if kind == "no_l2" else l2_reg * (x - centre).pow(2).sum()
        objective = score + penalty if kind == "sign" else score - penalty
        (grad,) = torch.autograd.grad(objective, [x])
        return (x + learning_rate * grad).detach()
    return wrong


_register(Exercise(
    name="class_visualization_step", module="class_viz", function="class_visualization_step",
    make_inputs=_class_viz_inputs, run=_class_viz_run, tolerance=1e-6, uses_model=True,
    hint="img + learning_rate * d/d img [score_target(img) - l2_reg * ||img - 0.5||^2] with the "
         "unnormalised score, a plain (not normalised) gradient step, no clamping",
    mistakes=(
        Mistake("no_l2", "the L2 penalty is missing: subtract l2_reg * ||img - 0.5||^2 from the score",
                _class_viz_variant("no_l2")),
        Mistake("around_zero", "the L2 penalty pulls towards 0.5 (mid-grey, the zero of the network's "
                "input), not towards 0: use ||img - 0.5||^2", _class_viz_variant("around_zero")),
        Mistake("sign", "the L2 penalty has the wrong sign: ascend score - l2_reg * ||img - 0.5||^2",
                _class_viz_variant("sign")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _class_viz_variant("probability")),
    ),
))


def _dream_inputs():
    return {"image": _photos("imagenet_05"), "step_size": np.array(0.05), "jitter": np.array(6),
            "seed": np.array(3)}


DREAM_LAYER = "blocks.4"


def _dream_run(fn, t, ctx):
    x = _images(t["image"])
    out = fn(ctx.model(), x, DREAM_LAYER, step_size=float(t["step_size"]), jitter=int(t["jitter"]),
             generator=_generator(t["seed"]))
    return {"step": out - x}


def _dream_variant(kind):
    def wrong(model, x, layer, *, step_size=0.01, jitter=32, generator=None):
        from .dream import roll_offsets
        from .hooks import extract_features

        dy, dx = roll_offsets(jitter, generator)
        rolled = torch.roll(x.detach(), shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        activation = extract_features(model, rolled, [layer])[layer]
        objective = activation.mean() if kind == "mean" else 0.5 * activation.pow(2).sum()
        (grad,) = torch.autograd.grad(objective, [rolled])
        if kind == "l2":
            grad = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        else:
            grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        stepped = rolled.detach() + step_size * grad
        if kind == "no_roll_back":
            return stepped.clamp(0, 1)
        stepped = torch.roll(stepped, shifts=(-dy, -dx), dims=(2, 3))
        return stepped if kind == "no_clamp" else stepped.clamp(0, 1)
    return wrong


_register(Exercise(
    name="deepdream_step", module="dream", function="deepdream_step",
    make_inputs=_dream_inputs, run=_dream_run, tolerance=1e-6, uses_model=True,
    hint="roll x by roll_offsets(jitter, generator), take the gradient of 0.5 * ||activation||^2 at the "
         "layer, divide it by its mean absolute value (per image), step uphill, roll back, clip to [0, 1]",
    mistakes=(
        Mistake("no_roll_back", "the image is not rolled back by (-dy, -dx) after the step",
                _dream_variant("no_roll_back")),
        Mistake("l2", "normalise the gradient by its mean absolute value, not its L2 norm",
                _dream_variant("l2")),
        Mistake("mean", "the objective is 0.5 * ||activation||^2 (its gradient at the layer is the "
                "activation "
                "itself), not the mean activation", _dream_variant("mean")),
        Mistake("no_clamp", "the pixels are not clipped to [0, 1] after the step",
                _dream_variant("no_clamp")),
    ),
))


# ---- feature-space exercises


RF_LAYERS = ("stem", "blocks.1", "blocks.5")


def _dilated_net():
    """A small network with padding, a dilated convolution and a pool: what receptive fields compose."""
    from torch import nn

    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("pool", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    net.add_module("conv3", nn.Conv2d(4, 4, 5, stride=2, padding=1))
    return net.eval()


def _rf_inputs():
    return {"input_size": np.array(64)}


def _rf_run(fn, t, ctx):
    model, size = ctx.model(), int(t["input_size"])
    outputs = {}
    for model_name, net, layers in (("lite0", model, RF_LAYERS), ("dilated", _dilated_net(), ("conv3",))):
        for layer in layers:
            field_ = fn(net, layer, size)
            outputs[f"{model_name}_{layer}"] = np.array([field_.size, field_.stride, field_.offset],
                                                        dtype=np.float64)
    return outputs


def _rf_variant(kind):
    def wrong(model, layer, input_size):
        from .receptive_fields import ReceptiveField, _spatial_ops_before

        input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        ops, output_size = _spatial_ops_before(model, layer, input_size)
        size, stride, offset = [1, 1], [1, 1], [0, 0]
        for kernel, step, dilation, pad in ops:
            for d in range(2):
                if kind == "stride_first":
                    stride[d] *= step[d]
                size[d] += (kernel[d] - 1) * (1 if kind == "no_dilation" else dilation[d]) * stride[d]
                offset[d] -= 0 if kind == "no_padding" else pad[d] * stride[d]
                if kind != "stride_first":
                    stride[d] *= step[d]
        return ReceptiveField(tuple(size), tuple(stride), tuple(offset), input_size, tuple(output_size))
    return wrong


_register(Exercise(
    name="receptive_field", module="receptive_fields", function="receptive_field",
    make_inputs=_rf_inputs, run=_rf_run, tolerance=0.0, uses_model=True,
    hint="walk the operations in order with j = the input distance between neighbouring units (product "
         "of the strides so far): size += (k - 1) * d * j; offset -= p * j; then j *= s",
    mistakes=(
        Mistake("stride_first", "j (the product of strides) is updated before it is used: grow size and "
                "offset with the strides of the layers *before* this one", _rf_variant("stride_first")),
        Mistake("no_dilation", "the dilation is missing: a dilated kernel spans (k - 1) * d + 1 inputs",
                _rf_variant("no_dilation")),
        Mistake("no_padding", "the padding is missing from the offset: offset -= p * j",
                _rf_variant("no_padding")),
    ),
))


def _nn_inputs():
    rng = _rng(5)
    queries = rng.standard_normal((4, 3, 2, 2))
    gallery = np.concatenate([rng.standard_normal((5, 3, 2, 2)), queries, rng.standard_normal((3, 3, 2, 2))])
    # queries 0, 2 and 3 skip themselves (gallery items 5, 7, 8): the usual leave-one-out query
    return {"queries": queries, "gallery": gallery, "k": np.array(3), "exclude": np.array([5, -1, 7, 8])}


def _nn_run(fn, t, ctx):
    k = int(t["k"])
    d, i = fn(t["queries"], t["gallery"], k)
    d_ex, i_ex = fn(t["queries"], t["gallery"], k, exclude=t["exclude"])
    return {"distances": d, "indices": i, "distances_exclude": d_ex, "indices_exclude": i_ex}


def _nn_variant(kind):
    def wrong(queries, gallery, k, *, exclude=None):
        q, g = queries.reshape(len(queries), -1), gallery.reshape(len(gallery), -1)
        distances = torch.cdist(q, g)
        if kind == "squared":
            distances = distances.pow(2)
        if exclude is not None and kind != "no_exclude":
            for row, col in enumerate(torch.as_tensor(exclude).tolist()):
                if col >= 0:
                    distances[row, col] = math.inf
        values, order = torch.sort(distances, dim=1, descending=kind == "farthest")
        return values[:, :k], order[:, :k]
    return wrong


_register(Exercise(
    name="nearest_neighbours", module="neighbours", function="nearest_neighbours",
    make_inputs=_nn_inputs, run=_nn_run, tolerance=1e-9,
    hint="Euclidean distances between the flattened queries and gallery items (torch.cdist, no loop over "
         "pairs), excluded items set to inf, the k smallest per query, nearest first",
    mistakes=(
        Mistake("squared", "squared distances; return the Euclidean distance (the square root)",
                _nn_variant("squared")),
        Mistake("no_exclude", "exclude is ignored: set the excluded gallery item's distance to inf",
                _nn_variant("no_exclude")),
        Mistake("farthest", "sorted farthest first; the nearest come first", _nn_variant("farthest")),
    ),
))


# ---- style exercises


def _norm_inputs():
    rng = _rng(6)
    return {"x": rng.standard_normal((2, 3, 5, 4)) * 3 + 1, "eps": np.array(0.1)}


def _norm_run(fn, t, ctx):
    return {"default_eps": fn(t["x"]), "eps": fn(t["x"], eps=float(t["eps"]))}


def _norm_variant(kind):
    def wrong(x, eps=1e-5):
        dims = {"layer": (1, 2, 3), "batch": (0, 2, 3)}.get(kind, (2, 3))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=kind == "unbiased")
        if kind == "eps_outside":
            return (x - mean) / (var.sqrt() + eps)
        return (x - mean) / torch.sqrt(var + eps)
    return wrong


_register(Exercise(
    name="instance_norm", module="fast_style", function="instance_norm",
    make_inputs=_norm_inputs, run=_norm_run, tolerance=1e-6,
    hint="for each image and channel: (x - mean) / sqrt(var + eps) over its H*W pixels, biased variance",
    mistakes=(
        Mistake("unbiased", "the unbiased variance (divide by H*W - 1); instance norm uses the biased one "
                "(divide by H*W)", _norm_variant("unbiased")),
        Mistake("eps_outside", "eps goes inside the square root: sqrt(var + eps)",
                _norm_variant("eps_outside")),
        Mistake("layer", "statistics over (C, H, W) is layer norm; use each channel's own H x W pixels",
                _norm_variant("layer")),
        Mistake("batch", "statistics over (N, H, W) is batch norm; use each image's own pixels",
                _norm_variant("batch")),
    ),
))


def _mix_inputs():
    rng = _rng(7)
    return {"a_0": rng.standard_normal((1, 3, 3)), "a_1": rng.standard_normal((1, 4, 4)),
            "b_0": rng.standard_normal((1, 3, 3)), "b_1": rng.standard_normal((1, 4, 4)),
            "weights": np.array([0.25, 0.75])}


def _style_targets_class(fn):
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    cls = getattr(module, "StyleTargets", None)
    if cls is None:
        from .style import StyleTargets as cls
    return cls


def _mix_run(fn, t, ctx):
    targets_cls = _style_targets_class(fn)
    layers = ("blocks.0", "blocks.2")
    a = targets_cls(layers, (t["a_0"], t["a_1"]))
    b = targets_cls(layers, (t["b_0"], t["b_1"]))
    mixed = fn([a, b], [float(w) for w in t["weights"]])
    return {"gram_0": mixed.grams[0], "gram_1": mixed.grams[1]}


def _mix_variant(kind):
    def wrong(targets, weights):
        cls = type(targets[0])
        if kind == "mean":
            weights = [1.0 / len(targets)] * len(targets)
        else:  # "reversed"
            weights = list(reversed(weights))
        layers = range(len(targets[0].layers))
        grams = tuple(sum(w * t.grams[i] for w, t in zip(weights, targets)) for i in layers)
        return cls(targets[0].layers, grams)
    return wrong


_register(Exercise(
    name="mix_styles", module="style", function="mix_styles",
    make_inputs=_mix_inputs, run=_mix_run, tolerance=1e-9,
    hint="at every layer l: sum over styles k of weights[k] * targets[k].grams[l], returned as StyleTargets",
    mistakes=(
        Mistake("mean", "the weights are ignored (a plain mean)", _mix_variant("mean")),
        Mistake("reversed", "the weights are paired with the wrong styles: weights[k] goes with targets[k]",
                _mix_variant("reversed")),
    ),
))


# --------------------------------------------------------------------------- golden files


def write_npz(path: Path, arrays: dict) -> None:
    """``np.savez_compressed`` without timestamps: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue())
    Path(path).write_bytes(buf.getvalue())


def _to_numpy(value, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, (int, float, np.ndarray, np.floating, np.integer)):
        return np.asarray(value, dtype=np.float64)
    raise TypeError(f"{what} is a {type(value).__name__}, expected a tensor")


MISTAKE_SAMPLES = 256


def _sample(array: np.ndarray) -> np.ndarray:
    """A fixed spread of at most MISTAKE_SAMPLES elements: enough to recognise a mistake, small to store."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    if flat.size <= MISTAKE_SAMPLES:
        return flat
    return flat[np.linspace(0, flat.size - 1, MISTAKE_SAMPLES).round().astype(np.int64)]


def _outputs(exercise: Exercise, fn: Callable, inputs: dict, ctx: Context) -> dict[str, np.ndarray]:
    tensors = {k: _t(v) for k, v in inputs.items()}
    raw = exercise.run(fn, tensors, ctx)
    return {k: _to_numpy(v, f"the result ({k})") for k, v in raw.items()}


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate(names=None, out_dir: Path | None = None, *, verbose: bool = True) -> list[Path]:
    """Write ``<out_dir>/<name>.npz`` (default ``data/checks``) from the reference implementations.

    Keys: ``inputs/*`` (the fixed inputs), ``outputs/*`` (the reference results) and
    ``mistakes/<key>/*`` (what each typical mistake returns).
    """
    out_dir = Path(out_dir) if out_dir is not None else CHECKS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context()
    paths = []
    with _one_thread(), torch.random.fork_rng(devices=[]):
        for name in names or list(EXERCISES):
            exercise = get_exercise(name)
            torch.manual_seed(0)
            inputs = exercise.make_inputs()
            arrays = {f"inputs/{k}": np.asarray(v) for k, v in inputs.items()}
            right = _outputs(exercise, exercise.reference(), inputs, ctx)
            # float32 keeps every element within 6e-8 relative error: enough for tolerances >= 1e-6
            stored = np.float32 if exercise.tolerance >= 1e-6 else np.float64
            arrays.update({f"outputs/{k}": v if k.startswith("calls_") else v.astype(stored)
                           for k, v in right.items()})
            for mistake in exercise.mistakes:
                wrong = _outputs(exercise, mistake.fn, inputs, ctx)
                arrays.update({f"mistakes/{mistake.key}/{k}": _sample(v) for k, v in wrong.items()
                               if not k.startswith("calls_")})
            path = out_dir / f"{name}.npz"
            write_npz(path, arrays)
            paths.append(path)
            if verbose:
                print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return paths


def load_golden(name: str, checks_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """``(inputs, outputs, mistakes)`` from an exercise's golden file; ``mistakes[key]``: outputs."""
    path = Path(checks_dir or CHECKS_DIR) / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(f"no golden file {path}; run `make checks` in the solution tree")
    inputs, outputs, mistakes = {}, {}, {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            kind, _, rest = key.partition("/")
            if kind == "inputs":
                inputs[rest] = npz[key]
            elif kind == "outputs":
                outputs[rest] = npz[key]
            elif kind == "mistakes":
                mistake, _, out = rest.partition("/")
                mistakes.setdefault(mistake, {})[out] = npz[key]
    return inputs, outputs, mistakes


# --------------------------------------------------------------------------- checking


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is "pass", "fail", "not implemented" or "error"."""

    name: str
    status: str
    rel_error: float | None = None
    message: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        if self.passed:
            return f"PASS {self.name} (rel. error {self.rel_error:.1e})"
        if self.rel_error is not None:
            return f"FAIL {self.name} (rel. error {self.rel_error:.2g}): {self.message}"
        if self.status == "fail":
            return f"FAIL {self.name}: {self.message}"
        return f"FAIL {self.name} ({self.status}): {self.message}"


def _not_implemented_message(exercise: Exercise, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    raiser = frames[-1].name if frames else exercise.function
    others = [e for e in EXERCISES.values() if e.function == raiser and e.name != exercise.name]
    if raiser != exercise.function and others:
        return (f"{exercise.function} calls {raiser}, which is not implemented yet: write {raiser} in "
                f"{others[0].path} first, then {exercise.function} in {exercise.path}")
    return f"not implemented yet: write {exercise.function} in {exercise.path}"


def _error_message(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (in {last.name}, {Path(last.filename).name} line {last.lineno})"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(exc).__name__}: {first}{where}"


def _hooks_and_modes(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
    return hooks, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


class _WatchedContext(Context):
    """Hands out models and remembers them, to check afterwards that nothing was left changed."""

    def __init__(self):
        self.models = []

    def model(self, dtype=torch.float64):
        model = super().model(dtype)
        self.models.append((model, _hooks_and_modes(model)))
        return model


def evaluate(name: str, fn: Callable | None = None, *, checks_dir: Path | None = None) -> CheckResult:
    """Run ``fn`` (default: the function importable from cs_utils) on the exercise's stored inputs
    and compare with the stored outputs. Never raises for a wrong ``fn``: the result says why."""
    exercise = get_exercise(name)
    inputs, expected, mistakes = load_golden(name, checks_dir)
    start = time.perf_counter()
    if fn is None:
        try:
            fn = exercise.reference()
        except Exception as exc:  # noqa: BLE001 - a broken module is a failed check
            return CheckResult(name, "error", message=f"cannot import {exercise.function} from "
                               f"{PACKAGE}.{exercise.module}: {_error_message(exc)}")
    ctx = _WatchedContext()
    tensors = {k: _t(v) for k, v in inputs.items()}
    originals = {k: v.clone() for k, v in tensors.items()}
    try:
        with _one_thread():
            raw = exercise.run(fn, tensors, ctx)
    except NotImplementedError as exc:
        return CheckResult(name, "not implemented", message=_not_implemented_message(exercise, exc),
                           seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the student's exception is the check's result
        return CheckResult(name, "error", message=_error_message(exc), seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start

    def fail(message, err=None):
        return CheckResult(name, "fail", err, message, seconds)

    try:
        got = {k: _to_numpy(v, f"the result ({k})") for k, v in raw.items()}
    except TypeError as exc:
        return fail(f"{exc}; return the result (did you forget `return`?)")

    for key, tensor in tensors.items():
        if tensor.shape != originals[key].shape or not torch.equal(tensor, originals[key]):
            return fail(f"the input {key!r} was changed in place; work on a copy (x.clone()) or out of place")
    for model, before in ctx.models:
        hooks, modes, flags = _hooks_and_modes(model)
        if hooks != before[0]:
            return fail("hooks were left on the model; remove them (use a context manager or try/finally)")
        if modes != before[1]:
            return fail("the model's train/eval mode changed; use cs_utils.evaluating(model)")
        if flags != before[2]:
            return fail("requires_grad of the model's parameters changed; differentiate with respect to the "
                        "image only (torch.autograd.grad(loss, [x]))")
    calls = {k: (int(got.pop(k, v)), int(v)) for k, v in list(expected.items()) if k.startswith("calls_")}
    for key in calls:
        del expected[key]
    for key, want in expected.items():
        if key not in got:
            return fail(f"no output {key!r}")
        if got[key].shape != want.shape:
            return fail(f"the result ({key}) has shape {tuple(got[key].shape)}, expected "
                        f"{tuple(want.shape)}. {exercise.hint}")
    err = max(rel_error(got[k], expected[k]) for k in expected)
    if err <= exercise.tolerance:
        for made, enough in calls.values():
            if made > enough:
                return fail(f"right values, but {made} forward passes where {enough} are enough: "
                            f"{exercise.vectorize_hint}", err)
        return CheckResult(name, "pass", err, "", seconds)
    by_mistake = {m.key: m for m in exercise.mistakes}
    for key, wrong in mistakes.items():
        if key in by_mistake and all(k in got and _sample(got[k]).shape == v.shape for k, v in wrong.items()):
            distance = max(rel_error(_sample(got[k]), v) for k, v in wrong.items())
            if distance <= max(exercise.tolerance * 10, 1e-5):
                return fail(f"{by_mistake[key].hint}.", err)
    if err < 1e-3:
        return fail(f"close, but not within {exercise.tolerance:.0e}: keep the inputs' dtype (float64; "
                    "no .float()) and add no epsilon or clamp the formula does not have", err)
    if not all(np.isfinite(v).all() for v in got.values()):
        return fail(f"the result contains NaN or inf. {exercise.hint}.", err)
    return fail(f"{exercise.hint}.", err)


def check(name: str, fn: Callable | None = None) -> None:
    """Print ``PASS name (rel. error ...)`` or ``FAIL name (...): hint``; raise AssertionError on FAIL."""
    result = evaluate(name, fn)
    print(result.line())
    if not result.passed:
        raise AssertionError(result.line())


def _signature(exercise: Exercise) -> str:
    try:
        return f"{exercise.function}{inspect.signature(exercise.reference())}"
    except Exception:  # noqa: BLE001
        return exercise.function


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs_utils.grading", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="exercises (default: all)")
    parser.add_argument("--generate", action="store_true", help="write the golden files from the solutions")
    parser.add_argument("--out", type=Path, default=None, help="folder for --generate (default data/checks)")
    parser.add_argument("--list", action="store_true", help="list the exercises")
    args = parser.parse_args(argv)
    if args.list:
        for exercise in EXERCISES.values():
            print(f"{exercise.name:28s} {exercise.path:28s} {_signature(exercise)}")
        return 0
    if args.generate:
        generate(args.names or None, args.out)
        return 0
    failed = 0
    for name in args.names or list(EXERCISES):
        result = evaluate(name)
        print(result.line())
        failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
