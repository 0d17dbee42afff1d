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
* a **parameterisation** of the image: raw pixels (:class:`PixelImage`) or a
  decorrelated Fourier basis (:class:`FourierImage`, Olah et al. 2017);
* **transforms** applied to the image before the objective sees it, drawn at
  random each step from the ``generator`` (:mod:`cs_utils.transforms`: :class:`Jitter`,
  :class:`Pad`, :class:`RandomScale`, :class:`RandomRotate`, :class:`Clamp`, :class:`Compose`);
* **regularisers** (:class:`L2Penalty`, :class:`TVPenalty`,
  :class:`GaussianBlur`, :class:`ClipSmallPixels`,
  :class:`ClipSmallGradients`; Yosinski et al. 2015);
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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .engine.lbfgs import LBFGS, clamp_straight_through
from .history import History
from .losses import tv_loss
from .objectives import Objective
from .transforms import Clamp, Compose, Jitter, Pad, RandomCrops, RandomRotate, RandomScale

__all__ = [
    "Clamp",
    "CentreBias",
    "ClipSmallGradients",
    "ClipSmallPixels",
    "Compose",
    "FourierImage",
    "GaussianBlur",
    "History",
    "Jitter",
    "L2Penalty",
    "NormalizedGradient",
    "NormalizedGradientDescent",
    "Pad",
    "PixelImage",
    "RandomRotate",
    "RandomCrops",
    "RandomScale",
    "Regularizer",
    "SpectralPhaseImage",
    "TVPenalty",
    "color_basis",
    "gaussian_blur",
    "normalized_direction",
    "optimize_image",
]


# ----------------------------------------------------------------------------- parameterisations

class PixelImage:
    """The image is its own parameter: a copy of ``init`` (N, 3, H, W), optimised directly."""

    def __init__(self, init: torch.Tensor):
        if not isinstance(init, torch.Tensor) or init.dim() != 4:
            shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"init must be an image batch of shape (N, C, H, W), got {shape}")
        if not init.is_floating_point():
            raise TypeError(f"init must be a float tensor in [0, 1], got {init.dtype}")
        self.pixels = init.detach().clone().requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def image(self) -> torch.Tensor:
        return self.pixels


# Square root of the colour correlation of ImageNet photos (Olah et al. 2017, Lucid).
_COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                            [0.27, 0.00, -0.05],
                                            [0.27, -0.09, 0.03]])


class FourierImage:
    """An image parameterised by its 2-D Fourier spectrum in decorrelated colour space.

    Each frequency's coefficient is scaled by ``1 / f^decay``, so plain gradient
    steps change low frequencies more than high ones (the high-frequency noise
    that raw-pixel ascent produces is damped); colours go through the square
    root of ImageNet's colour correlation and a sigmoid keeps pixels in (0, 1).
    ``scale`` multiplies the decorrelated image before the sigmoid (more
    contrast). With ``normalize`` the decorrelated image is first standardised per image (mean 0,
    standard deviation 1), so ``scale`` alone sets the contrast and the optimiser cannot blow the
    image out to pure white, black or primary colours. Random initial coefficients come from
    ``generator``.
    """

    def __init__(self, shape: Sequence[int], *, decay: float = 1.0, scale: float = 1.0, std: float = 0.01,
                 normalize: bool = False, generator: torch.Generator | None = None, device=None):
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"shape must be (N, 3, H, W), got {tuple(shape)}")
        n, c, h, w = (int(s) for s in shape)
        self.size = (h, w)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx ** 2 + fy ** 2)
        self.spectrum_scale = (1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay * math.sqrt(h * w)).to(device)
        noise = torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * std
        self.coefficients = noise.to(device).requires_grad_(True)
        self.scale, self.normalize = scale, bool(normalize)
        self.color = color_basis().to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.coefficients]

    def image(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.coefficients) * self.spectrum_scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="backward") / 4.0
        if self.normalize:
            decorrelated = _standardized(decorrelated)
        rgb = torch.einsum("nchw,dc->ndhw", decorrelated, self.color)
        return torch.sigmoid(self.scale * rgb)


def _standardized(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) with mean 0 and standard deviation 1 over all its values."""
    flat = x.flatten(1)
    return (x - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-8)


def color_basis() -> torch.Tensor:
    """The 3x3 matrix ``M`` that maps decorrelated colour to RGB (``rgb = M @ c``) in
    :class:`FourierImage` and :class:`SpectralPhaseImage`: ImageNet's colour correlation, square-rooted."""
    return _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class SpectralPhaseImage:
    """MACO (Fel et al. 2023): only the *phase* of the image's 2-D spectrum is optimised; its magnitude
    stays fixed to ``magnitude``, the mean spectrum of natural photos, so the image keeps the
    photos' balance of coarse and fine structure (no pixel noise, no dot grid).

    ``magnitude``: ``(3, H, W // 2 + 1)`` amplitudes of the three decorrelated colour channels, e.g.
    :func:`cs_utils.image_stats.photo_amplitude_spectrum` with ``decorrelated=True``. The image is
    the inverse FFT, standardised per image (mean 0, standard deviation 1), recorrelated with
    ImageNet's colour correlation and squashed into (0, 1) by ``sigmoid(contrast * .)``: no pixel is
    ever clamped. Initial phases are uniform in [-pi, pi) from ``generator``.
    """

    def __init__(self, shape: Sequence[int], magnitude: torch.Tensor, *, contrast: float = 2.0,
                 generator: torch.Generator | None = None, device=None):
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"shape must be (N, 3, H, W), got {tuple(shape)}")
        n, _, h, w = (int(s) for s in shape)
        expected = (3, h, w // 2 + 1)
        if not isinstance(magnitude, torch.Tensor) or tuple(magnitude.shape) != expected:
            got = tuple(magnitude.shape) if isinstance(magnitude, torch.Tensor) else type(magnitude).__name__
            raise ValueError(f"magnitude must be a tensor of shape {expected} (rfft2 of a {h}x{w} image), "
                             f"got {got}")
        if not contrast > 0:
            raise ValueError(f"contrast must be positive, got {contrast!r}")
        self.size, self.contrast = (h, w), float(contrast)
        self.magnitude = magnitude.detach().float().to(device)
        phase = (torch.rand(n, 3, h, w // 2 + 1, generator=generator) * 2 - 1) * math.pi
        self.phase = phase.to(device).requires_grad_(True)
        self.color = color_basis().to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def decorrelated(self) -> torch.Tensor:
        """The image in decorrelated colour before the sigmoid, standardised per image: its spectrum
        has the fixed ``magnitude`` (up to one scale per image) and the optimised phase."""
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        return _standardized(torch.fft.irfft2(spectrum, s=self.size))

    def image(self) -> torch.Tensor:
        rgb = torch.einsum("nchw,dc->ndhw", self.decorrelated(), self.color)
        return torch.sigmoid(self.contrast * rgb)


# ----------------------------------------------------------------------------- regularisers

class Regularizer:
    """Base class. A regulariser can add a ``penalty(x)`` to the loss, change the
    gradient (``filter_grad``) or edit the pixels after a step (``after_step``);
    the defaults do nothing. The last two act on raw pixels only."""

    def penalty(self, x: torch.Tensor):
        return None

    def filter_grad(self, grad: torch.Tensor, x: torch.Tensor, step: int) -> torch.Tensor:
        return grad

    def after_step(self, x: torch.Tensor, step: int) -> None:
        """Edit ``x`` in place (called under ``torch.no_grad()``)."""

    @property
    def acts_on_pixels(self) -> bool:
        cls = type(self)
        return cls.filter_grad is not Regularizer.filter_grad or cls.after_step is not Regularizer.after_step


class L2Penalty(Regularizer):
    """``weight * sum((x - center)^2)``: pulls pixels towards mid-grey (CS231n's L2 on the image)."""

    def __init__(self, weight: float, center: float = 0.5):
        self.weight, self.center = weight, center

    def penalty(self, x):
        return self.weight * (x - self.center).pow(2).sum()


class TVPenalty(Regularizer):
    """Total variation ``weight * tv_loss(x, beta)`` (see :func:`cs_utils.losses.tv_loss`)."""

    def __init__(self, weight: float, beta: float = 2.0):
        self.weight, self.beta = weight, beta

    def penalty(self, x):
        return tv_loss(x, weight=self.weight, beta=self.beta)


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflected borders; ``sigma`` in pixels."""
    if sigma <= 0:
        return x
    kernel = _gaussian_kernel(sigma, x.dtype, x.device)
    radius = (kernel.numel() - 1) // 2
    c = x.shape[1]
    pad_mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    out = F.pad(x, (radius, radius, 0, 0), mode=pad_mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode=pad_mode)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class CentreBias(Regularizer):
    """``weight * mean(r^2 * (x - mean colour)^2)`` with ``r`` the distance from the image's centre
    (1 at the middle of each edge): structure away from the centre costs more, so the object is
    drawn in the middle (after the centre-biased regularisation of Nguyen, Yosinski & Clune 2016)."""

    def __init__(self, weight: float):
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.weight = float(weight)

    def penalty(self, x):
        h, w = x.shape[-2:]
        ys = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device)[:, None]
        xs = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device)[None, :]
        r2 = ys ** 2 + xs ** 2
        deviation = (x - x.mean(dim=(-2, -1), keepdim=True)).pow(2).sum(dim=1)
        return self.weight * (r2 * deviation).mean(dim=(-2, -1)).sum()


class GaussianBlur(Regularizer):
    """Blur the pixels with a Gaussian of ``sigma`` after every ``every``-th step (Yosinski et al.)."""

    def __init__(self, sigma: float, every: int = 1):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.sigma, self.every = sigma, every

    def after_step(self, x, step):
        if (step + 1) % self.every == 0:
            x.copy_(gaussian_blur(x, self.sigma))


class ClipSmallPixels(Regularizer):
    """Set pixels whose distance from ``center`` (L2 over colours) is below the ``percentile``-th
    percentile of each image to ``center``: only strong pixels survive (Yosinski et al.)."""

    def __init__(self, percentile: float, center: float = 0.5):
        self.percentile, self.center = percentile, center

    def after_step(self, x, step):
        norms = (x - self.center).norm(dim=1, keepdim=True)                      # (N, 1, H, W)
        threshold = torch.quantile(norms.flatten(1), self.percentile / 100, dim=1).view(-1, 1, 1, 1)
        x.masked_fill_(norms < threshold, self.center)


class ClipSmallGradients(Regularizer):
    """Zero gradient entries whose magnitude is below the ``percentile``-th percentile of each image."""

    def __init__(self, percentile: float):
        self.percentile = percentile

    def filter_grad(self, grad, x, step):
        mags = grad.abs().flatten(1)
        threshold = torch.quantile(mags, self.percentile / 100, dim=1).view(-1, *[1] * (grad.dim() - 1))
        return torch.where(grad.abs() < threshold, torch.zeros_like(grad), grad)


# ----------------------------------------------------------------------------- optimisers

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
    # history 10: each evaluation's two-loop recursion reads every stored pair twice, 16 MB at
    # 256 px with 10 pairs (31 MB with 20), about 1 ms of a style-transfer evaluation on 2 CPU threads.
    # Measured on EfficientNet-Lite0 at 256 px, the loss after 200 evaluations with 10 pairs was a
    # median 0.99x that with 20 (12 content/style pairs, 0.74-1.02x; two textures 1.03x), and after
    # 400 evaluations 0.96-1.01x (4 pairs). cs_utils.engine.lbfgs.LBFGS is torch.optim.LBFGS, step for step.
    return LBFGS(params, lr=lr, max_iter=steps, max_eval=steps, tolerance_grad=1e-12,
                 tolerance_change=1e-14, history_size=10, line_search_fn="strong_wolfe")


# ----------------------------------------------------------------------------- the loop

class _Stop(Exception):
    pass


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
        objective sees it (random draws come from ``generator``).
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
            if isinstance(objective, Objective):
                value, terms = objective.evaluate(seen)
            else:
                value, terms = objective(seen), {}
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError("the objective must return a scalar tensor (sum or mean over the batch)")
            value = value.reshape(())
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

