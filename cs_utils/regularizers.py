"""Regularizers for :func:`cs_utils.optimize.optimize_image` (Yosinski et al. 2015; Nguyen et al. 2016).

A regularizer can add a ``penalty(x)`` to the loss (:class:`L2Penalty`, :class:`TVPenalty`,
:class:`CenterBias`), change the gradient before the step (:class:`ClipSmallGradients`) or edit
the pixels after it (:class:`GaussianBlur`, :class:`ClipSmallPixels`). Penalties work with every
parameterization; the other two act on raw pixels only.
"""

from __future__ import annotations

import torch

from .blur import gaussian_blur
from .losses import tv_loss

__all__ = [
    "CenterBias",
    "ClipSmallGradients",
    "ClipSmallPixels",
    "GaussianBlur",
    "L2Penalty",
    "Regularizer",
    "TVPenalty",
]


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


class CenterBias(Regularizer):
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
