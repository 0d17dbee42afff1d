"""One image-optimisation loop for the "optimise the pixels, keep the weights" techniques.

:func:`optimize_image` runs class visualization (:func:`cs_utils.class_visualization`),
DeepDream (:func:`cs_utils.deepdream`), feature inversion (:func:`cs_utils.invert_features`),
texture synthesis (:func:`cs_utils.synthesize_texture`), style transfer
(:func:`cs_utils.style_transfer`) and PGD (:func:`cs_utils.pgd`). They differ only in the
parts they combine:

* an **objective**: ``objective(x) -> scalar`` to *minimise*, usually built from the
  vocabulary of :mod:`cs_utils.objectives` (``class_score``, ``channel``, ``layer_l2``,
  ``gram_match``, ...), whose terms add, scale and share one forward pass; terms marked
  with ``.track(key)`` are recorded in ``history.extra[key]``;
* a **parameterization** of the image (:mod:`cs_utils.parameterizations`): raw pixels
  (``PixelImage``), a decorrelated Fourier basis (``FourierImage``, Olah et al. 2017) or a
  spectrum's phase (``SpectralPhaseImage``);
* **transforms** applied to the image before the objective sees it, drawn at
  random each step from the ``generator`` (:mod:`cs_utils.transforms`: ``Jitter``,
  ``Pad``, ``RandomScale``, ``RandomRotate``, ``RandomCrops``, ``Clamp``, ``Compose``);
* **regularizers** (:mod:`cs_utils.regularizers`: ``L2Penalty``, ``TVPenalty``, ``CenterBias``,
  ``GaussianBlur``, ``ClipSmallPixels``, ``ClipSmallGradients``);
* an **optimiser**: ``"adam"``, ``"sgd"``, ``"lbfgs"`` or
  :class:`NormalizedGradient` (steps of fixed size along the gradient's direction or
  its sign, as CS231n's class visualization, DeepDream and PGD use);
* a **projection** of the pixels after every step (PGD's L-infinity ball).

Not on the loop: fooling images (:func:`cs_utils.fooling_image`), because each image of
a batch stops on its own as soon as it fools the model, which one loop over the whole
batch cannot express; FGSM, a single step; and the single steps written out by hand as
exercises (:func:`cs_utils.class_visualization_step`, :func:`cs_utils.fooling_step`,
:func:`cs_utils.deepdream_step`). The tests check that ``class_visualization_step`` and
``deepdream_step`` equal one step of the loop.

Gradients are taken with ``torch.autograd.grad`` with respect to the image
parameters only, so nothing is accumulated in the model's parameters, and the
caller's ``init`` tensor is never modified.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .engine.lbfgs import LBFGS, clamp_straight_through
from .history import History
from .objectives import Objective
from .parameterizations import PixelImage
from .regularizers import Regularizer
from .transforms import Compose

__all__ = [
    "NormalizedGradient",
    "NormalizedGradientDescent",
    "normalized_direction",
    "optimize_image",
    "switch_off_after",
]


# ----------------------------------------------------------------------------- optimizers

class NormalizedGradientDescent(torch.optim.Optimizer):
    """Steps of size ``lr`` along the gradient direction, normalised per image.

    ``norm="l2"``: ``x -= lr * g / ||g||_2`` (fooling images, CS231n);
    ``"mean_abs"``: ``x -= lr * g / mean|g|`` (DeepDream);
    ``"linf"``: ``x -= lr * g / max|g|``; ``"sign"``: ``x -= lr * sign(g)`` (FGSM).
    The first dimension of each parameter is the batch: every image gets its own norm.
    """

    NORMS = ("l2", "mean_abs", "linf", "sign")

    def __init__(self, params, lr: float = 0.01, norm: str = "l2", eps: float = 1e-12):
        if norm not in self.NORMS:
            raise ValueError(f"norm must be one of {self.NORMS}, got {norm!r}")
        super().__init__(params, dict(lr=lr, norm=norm, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.sub_(group["lr"] * normalized_direction(p.grad, group["norm"], group["eps"]))
        return loss


def normalized_direction(grad: torch.Tensor, norm: str = "l2", eps: float = 1e-12) -> torch.Tensor:
    """``grad`` divided by its per-image ``norm`` ("l2", "mean_abs", "linf") or its sign ("sign")."""
    if norm == "sign":
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1)
    shape = (-1,) + (1,) * (grad.dim() - 1)
    if norm == "l2":
        size = flat.norm(dim=1)
    elif norm == "mean_abs":
        size = flat.abs().mean(dim=1)
    elif norm == "linf":
        size = flat.abs().amax(dim=1)
    else:
        raise ValueError(f"norm must be one of {NormalizedGradientDescent.NORMS}, got {norm!r}")
    return grad / (size.view(shape) + eps)


@dataclass(frozen=True)
class NormalizedGradient:
    """Optimiser choice for :func:`optimize_image`: ``optimizer=NormalizedGradient(0.01, "mean_abs")``.

    Calling it with the image parameters builds a :class:`NormalizedGradientDescent`.
    """

    lr: float
    norm: str = "l2"

    def __post_init__(self):
        if self.norm not in NormalizedGradientDescent.NORMS:
            raise ValueError(f"norm must be one of {NormalizedGradientDescent.NORMS}, got {self.norm!r}")

    def __call__(self, params):
        return NormalizedGradientDescent(params, lr=self.lr, norm=self.norm)


_DEFAULT_LR = {"adam": 0.05, "sgd": 0.1, "lbfgs": 1.0}


def _make_optimizer(spec, params, lr, steps):
    if isinstance(spec, torch.optim.Optimizer):
        raise TypeError("pass the optimiser as a name, a NormalizedGradient(...) spec or a factory "
                        "callable params -> optimizer; the image parameters are created inside")
    if callable(spec):
        return spec(params)
    if spec not in _DEFAULT_LR:
        raise ValueError(f"optimizer must be 'adam', 'sgd', 'lbfgs', NormalizedGradient(lr, norm) "
                         f"or a callable, got {spec!r}")
    lr = _DEFAULT_LR[spec] if lr is None else lr
    if spec == "adam":
        return torch.optim.Adam(params, lr=lr)
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # 10 pairs, not torch's 20: the two-loop recursion reads every stored pair twice per evaluation,
    # and the loss reached with 10 was as low (benchmarks/README.md). The engine's LBFGS takes
    # torch.optim.LBFGS's steps, bit for bit.
    return LBFGS(params, lr=lr, max_iter=steps, max_eval=steps, tolerance_grad=1e-12,
                 tolerance_change=1e-14, history_size=10, line_search_fn="strong_wolfe")


# ----------------------------------------------------------------------------- the loop

class _Stop(Exception):
    pass


def _evaluate(objective, x):
    if isinstance(objective, Objective):
        value, terms = objective.evaluate(x)
    else:
        value, terms = objective(x), {}
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError("the objective must return a scalar tensor (sum or mean over the batch)")
    return value.reshape(()), terms


def _mean_over_views(objective, views):
    """The objective's value (and tracked terms) averaged over the views a transform returned
    (one view unless a transform such as :class:`cs_utils.transforms.Views` returns a list)."""
    if len(views) == 1:
        return _evaluate(objective, views[0])
    value, terms = 0, {}
    for view in views:
        v, t = _evaluate(objective, view)
        value = value + v / len(views)
        for key, term in t.items():
            terms[key] = terms.get(key, 0) + term / len(views)
    return value, terms


def optimize_image(
    objective: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor | None = None,
    *,
    steps: int,
    lr: float | None = None,
    optimizer="adam",
    parameterization=None,
    transforms: Sequence[Callable] = (),
    regularizers: Sequence[Regularizer] = (),
    clamp: tuple[float, float] | None = (0.0, 1.0),
    project: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str | None = None,
    callback: Callable | None = None,
) -> tuple[torch.Tensor, History]:
    """Minimise ``objective(transform(image)) + penalties(image)`` over the image.

    Parameters
    ----------
    objective : callable ``x -> scalar tensor`` to minimise (return ``-score`` to ascend), usually an
        :class:`cs_utils.objectives.Objective`: the value of each term marked ``.track(key)`` is then
        appended to ``history.extra[key]`` at every evaluation.
    init : (N, 3, H, W) starting image in [0, 1] for the raw-pixel parameterisation; not modified.
    steps : optimiser steps (for ``"lbfgs"``: objective evaluations).
    lr : step size; default 0.05 for Adam, 0.1 for SGD, 1 for L-BFGS.
    optimizer : ``"adam"``, ``"sgd"``, ``"lbfgs"``, ``NormalizedGradient(lr, norm)``, or a
        callable ``params -> torch.optim.Optimizer``.
    parameterization : ``None`` (raw pixels of ``init``) or an object with ``parameters()`` and
        ``image()``, such as :class:`FourierImage`.
    transforms : callables ``t(x, generator) -> x`` applied, in order, to the image before the
        objective sees it (random draws come from ``generator``). A transform may return a list of
        views (:class:`cs_utils.transforms.Views`): the objective is then the mean over them.
    regularizers : :class:`Regularizer` objects (penalties, gradient filters, after-step edits).
    clamp : pixel range enforced after every step (raw pixels only; with L-BFGS the objective sees
        the clamped image at every evaluation); ``None`` for no clamping.
    project : ``project(pixels)`` applied to the raw pixels after every step (after ``clamp``), under
        ``torch.no_grad()``: it edits them in place or returns the projected tensor (e.g. PGD's
        L-infinity ball around the photo). Raw pixels and first-order optimisers only: L-BFGS's
        line search cannot be projected between evaluations.
    generator : ``torch.Generator`` for every random choice; same seed, same image.
    progress : show a tqdm progress bar.
    callback : ``callback(step, image, objective_value) -> bool``; return True to stop.

    Returns
    -------
    ``(image, history)``: the final image (detached, on ``init``'s device) and a :class:`History`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if parameterization is None:
        if init is None:
            raise ValueError("give an init image, or a parameterization such as FourierImage(...)")
        parameterization = PixelImage(init)
    elif init is not None:
        raise ValueError("give either init (raw pixels) or a parameterization, not both")
    pixels = isinstance(parameterization, PixelImage)
    if project is not None and not callable(project):
        raise TypeError(f"project must be a callable pixels -> pixels, got {type(project).__name__}")
    if project is not None and not pixels:
        raise ValueError(f"project edits raw pixels; it cannot be used with "
                         f"{type(parameterization).__name__}")
    regularizers = list(regularizers)
    for reg in regularizers:
        if not isinstance(reg, Regularizer):
            raise TypeError(f"regularizers must be Regularizer objects, got {type(reg).__name__}")
        if reg.acts_on_pixels and not pixels:
            raise ValueError(f"{type(reg).__name__} edits raw pixels or their gradient; it cannot be used "
                             f"with {type(parameterization).__name__}; use a penalty or transforms instead")
    transform = Compose(*transforms)
    params = parameterization.parameters()
    opt = _make_optimizer(optimizer, params, lr, steps)
    lbfgs = isinstance(opt, torch.optim.LBFGS)
    if lbfgs and project is not None:
        raise ValueError("project needs a first-order optimiser ('adam', 'sgd', NormalizedGradient): "
                         "L-BFGS's line search cannot be projected between evaluations")
    history = History()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    start = time.perf_counter()

    def evaluate():
        step = len(history.loss)
        with torch.enable_grad():
            image = parameterization.image()
            if lbfgs and pixels and clamp is not None:
                # L-BFGS's line search cannot be clamped between evaluations: the objective sees
                # the clamped image, and the gradient passes the clamp unchanged (straight through),
                # so the problem stays smooth for the line search.
                image = clamp_straight_through(image, *clamp)
            seen = transform(image, generator)
            value, terms = _mean_over_views(objective, seen if isinstance(seen, list) else [seen])
            for key, term in terms.items():
                history.record(key, float(term.detach()))
            total = value
            for reg in regularizers:
                penalty = reg.penalty(image)
                if penalty is not None:
                    total = total + penalty
            grads = torch.autograd.grad(total, params)
        if pixels:
            g = grads[0]
            for reg in regularizers:
                g = reg.filter_grad(g, image.detach(), step)
            grads = (g,)
        for p, g in zip(params, grads):
            p.grad = g
        total, value = total.detach(), value.detach()
        history.loss.append(float(total))
        history.objective.append(float(value))
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(total):.4g}")
        return total, float(value)

    def finish_step(step, value):
        if pixels:
            with torch.no_grad():
                for reg in regularizers:
                    reg.after_step(parameterization.pixels, step)
                if clamp is not None:
                    parameterization.pixels.clamp_(*clamp)
                if project is not None:
                    projected = project(parameterization.pixels)
                    if projected is not None and projected is not parameterization.pixels:
                        parameterization.pixels.copy_(projected)
        if callback is not None and callback(step, parameterization.image().detach(), value):
            raise _Stop

    try:
        if lbfgs:
            def closure():
                if len(history.loss) >= steps:
                    raise _Stop
                opt.zero_grad(set_to_none=True)
                total, value = evaluate()
                if callback is not None and callback(len(history.loss) - 1,
                                                     parameterization.image().detach(), value):
                    raise _Stop
                return total
            while len(history.loss) < steps:
                before = len(history.loss)
                opt.step(closure)
                if len(history.loss) - before <= 1:   # converged: L-BFGS's tolerances were met
                    break
        else:
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                _, value = evaluate()
                opt.step()
                finish_step(step, value)
    except _Stop:
        history.stopped_early = len(history.loss) < steps
    finally:
        bar.close()
        for p in params:
            p.grad = None
    history.steps = len(history.loss)
    history.seconds = time.perf_counter() - start
    with torch.no_grad():
        image = parameterization.image().detach().clone()
        if clamp is not None:
            image = image.clamp(*clamp)
    if init is not None:
        image = image.to(init.device)
    return image, history


def switch_off_after(switch, steps: int, callback=None):
    """A ``callback`` for :func:`optimize_image` that sets ``switch.enabled`` to False once ``steps``
    steps are done (True before), then calls ``callback``, if any: a term or a gradient rule that
    acts during the first steps only (redirected ReLU gradients, the facets' diversity term)."""
    def switch_step(step, image, value):
        switch.enabled = step + 1 < steps
        return callback(step, image, value) if callback is not None else False
    return switch_step
