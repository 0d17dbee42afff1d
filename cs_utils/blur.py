"""The one Gaussian blur of the package, with the two borders its users need.

* ``border="reflect"`` (default): torchvision's ``gaussian_blur`` (mirrored borders, a kernel of
  ``2 * ceil(3 * sigma) + 1`` taps, cut to the image when the image is smaller): the
  class-visualization regularizer (:class:`cs_utils.regularizers.GaussianBlur`) and the blurred
  baseline of :func:`cs_utils.integrated_gradients`;
* ``border="inside"``: each output pixel is the Gaussian-weighted mean of the pixels inside the
  image (no padding value leaks in, a constant image stays constant), for any ``sigma`` up to
  ``math.inf`` (each image's mean color): the start of :func:`cs_utils.evaluation.insertion_curve`.

:func:`mirrored_blur` computes the "reflect" blur as two matrix products, faster with its gradient
on a CPU: the milky-veil measure (:func:`cs_utils.milky_share`) and its penalty in class
visualization share it.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch.nn import functional as F

__all__ = ["BORDERS", "gaussian_blur", "mirrored_blur"]

BORDERS = ("reflect", "inside")


def gaussian_blur(x: torch.Tensor, sigma: float, *, border: str = "reflect") -> torch.Tensor:
    """Images (N, C, H, W) blurred by a Gaussian of standard deviation ``sigma`` pixels; a new tensor
    (``sigma=0``: ``x`` itself with ``border="reflect"``, a copy with ``"inside"``).

    ``border``: ``"reflect"`` mirrors the image at its borders; ``"inside"`` averages only over the
    pixels inside the image and also takes ``sigma`` larger than the image (``math.inf``: each
    image's mean color everywhere). The result is detached with ``"inside"``.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if border == "inside":
        return _blur_inside(x, sigma)
    if sigma <= 0:
        return x
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)   # mirroring needs radius < side
    if radius < 1:
        return x
    # imported here: importing torchvision costs about a second (it loads torch's compiler), and
    # every process that imports cs_utils (a notebook kernel, a grading sandbox) would pay it
    from torchvision.transforms.v2 import functional as TF

    return TF.gaussian_blur(x, [2 * radius + 1] * 2, [float(sigma)] * 2)


def _blur_inside(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected float images (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if (not isinstance(sigma, numbers.Real) or isinstance(sigma, bool) or math.isnan(sigma)
            or sigma < 0):
        raise ValueError(f"blur_sigma must be a number of pixels >= 0 (math.inf: the mean color), "
                         f"got {sigma!r}")
    x = x.detach()
    if sigma == 0:
        return x.clone()
    if math.isinf(sigma):
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    height, width = x.shape[-2:]

    def kernel(size: int) -> torch.Tensor:
        radius = min(math.ceil(3 * sigma), size - 1)   # a wider kernel would touch no pixel
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        return torch.exp(-offsets ** 2 / (2 * sigma ** 2)).to(x.dtype).to(x.device)

    kh, kw = kernel(height), kernel(width)

    def blur(images: torch.Tensor) -> torch.Tensor:      # (B, 1, H, W), zero padding
        images = F.conv2d(images, kh.view(1, 1, -1, 1), padding=(len(kh) // 2, 0))
        return F.conv2d(images, kw.view(1, 1, 1, -1), padding=(0, len(kw) // 2))

    weights = blur(torch.ones(1, 1, height, width, dtype=x.dtype, device=x.device))
    return (blur(x.reshape(-1, 1, height, width)) / weights).view(x.shape)


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``(n, n)`` matrix ``M`` with ``x @ M`` = ``x`` blurred along its last axis by a Gaussian of ``sigma``
    pixels (``2 * ceil(3 * sigma) + 1`` taps, mirrored borders); float64 on the CPU."""
    radius = min(math.ceil(3 * sigma), n - 1)
    taps = torch.arange(-radius, radius + 1)
    kernel = torch.exp(-taps.double() ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    source = torch.arange(n)[:, None] + taps[None, :]                  # (output, tap)
    source = torch.where(source < 0, -source, source)
    source = torch.where(source > n - 1, 2 * (n - 1) - source, source)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    output = torch.arange(n)[:, None].expand_as(source)
    matrix.index_put_((source, output), kernel.expand_as(source), accumulate=True)
    return matrix


def mirrored_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel of ``x`` (N, C, H, W) blurred by a Gaussian of ``sigma`` pixels (mirrored borders, as
    ``gaussian_blur``'s "reflect") as two matrix products, one per axis: on a CPU several times faster,
    with its gradient, than a convolution of one channel, which matters at every step of an
    optimisation (the milky-veil measure and its penalty, :class:`cs_utils.class_viz.MilkPenalty`)."""
    h, w = x.shape[-2:]
    if min(h, w) < 2:
        return x
    rows = _blur_matrix(h, float(sigma)).to(dtype=x.dtype, device=x.device)
    columns = rows if w == h else _blur_matrix(w, float(sigma)).to(dtype=x.dtype, device=x.device)
    return rows.T @ (x @ columns)
