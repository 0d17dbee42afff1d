"""What the layers hold: every channel of one layer for one photo, and filters beyond the first layer.

:func:`activation_maps` returns the (C, H, W) output of one layer for one image;
:func:`almost_zero_channels` and :func:`zero_channel_share` say which channels are almost
all zero (after a ReLU or ReLU6 a zero means "not excited"); :func:`show_activation_maps`
draws all channels as one grid of greyscale maps on a common scale, so a channel that the
photo does not excite is black. :func:`filter_channel_montage` and
:func:`show_filter_channels` draw a deeper convolution's filters one input channel at a
time (rows: filters, columns: input channels), grey for 0, white for positive weights,
black for negative ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .hooks import evaluating, extract_features

__all__ = [
    "activation_maps",
    "activation_montage",
    "almost_zero_channels",
    "filter_channel_montage",
    "show_activation_maps",
    "show_filter_channels",
    "zero_channel_share",
]


def _check_maps(maps) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3 or maps.numel() == 0:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a non-empty tensor (C, H, W), got {shape}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    return maps.detach().float().cpu()


def activation_maps(model: nn.Module, image: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` for one image, as a (C, H, W) float tensor on the CPU.

    ``image``: (3, H, W) or (1, 3, H, W) in [0, 1]. The model runs in eval mode without
    gradients; its mode, hooks and parameters are left as they were.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a tensor (3, H, W) or (1, 3, H, W), got {shape}")
    x = image[None] if image.dim() == 3 else image
    if x.shape[0] != 1:
        raise ValueError(f"pass one image, got a batch of {x.shape[0]}")
    device = next(model.parameters()).device
    with evaluating(model), torch.no_grad():
        out = extract_features(model, x.to(device), [layer])[layer]
    if out.dim() != 4:
        raise ValueError(f"layer {layer!r} gives {tuple(out.shape)}; pick a convolutional layer (N, C, H, W)")
    return out[0].float().cpu()


def almost_zero_channels(maps: torch.Tensor, *, zero_share: float = 0.95, tol: float = 0.0) -> torch.Tensor:
    """Bool (C,): True for each channel whose values are ``<= tol`` at ``zero_share`` or more of its
    positions.

    After a ReLU or ReLU6 the value is exactly 0 wherever the unit is not excited, so
    ``tol=0`` counts the positions where it is silent.
    """
    maps = _check_maps(maps)
    if not 0.0 < zero_share <= 1.0:
        raise ValueError(f"zero_share must be in (0, 1], got {zero_share}")
    silent = (maps <= tol).float().flatten(1).mean(1)
    return silent >= zero_share


def zero_channel_share(maps: torch.Tensor, *, zero_share: float = 0.95, tol: float = 0.0) -> float:
    """The share (0..1) of channels that are almost all zero (see :func:`almost_zero_channels`)."""
    return almost_zero_channels(maps, zero_share=zero_share, tol=tol).float().mean().item()


def activation_montage(maps: torch.Tensor, *, ncols: int | None = None, vmax: float | None = None,
                       pad: int = 1, pad_value: float = 0.4) -> np.ndarray:
    """All channels tiled into one (H', W') greyscale image in [0, 1] on a common scale.

    0 is black and ``vmax`` (default: the largest value of all maps) is white, the same for
    every channel, so a silent channel is a black tile. Tiles are separated by ``pad``
    pixels of ``pad_value`` (grey); ``ncols`` tiles per row (default: about square).
    """
    maps = _check_maps(maps)
    c, h, w = maps.shape
    ncols = ncols or math.ceil(math.sqrt(c))
    if ncols <= 0:
        raise ValueError(f"ncols must be positive, got {ncols}")
    top = float(maps.max()) if vmax is None else float(vmax)
    if top <= 0:
        top = 1.0
    scaled = (maps / top).clamp(0, 1).numpy()
    nrows = math.ceil(c / ncols)
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, dtype=np.float32)
    for i in range(c):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y:y + h, x:x + w] = scaled[i]
    return canvas


def _axis(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def show_activation_maps(maps: torch.Tensor, *, ncols: int | None = None, vmax: float | None = None,
                         title: str | None = None, ax=None, panel_size: float = 6.0, save=None):
    """Draw every channel of ``maps`` (C, H, W) as a greyscale tile on one scale; returns the Figure.

    See :func:`activation_montage` for the scale and layout.
    """
    montage = activation_montage(maps, ncols=ncols, vmax=vmax)
    fig, axis = _axis(ax, (panel_size, panel_size * montage.shape[0] / montage.shape[1] + 0.3))
    axis.imshow(montage, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=10)
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=120)
    return fig


def _weight(weight) -> torch.Tensor:
    if isinstance(weight, nn.Module):
        weight = getattr(weight, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.numel() == 0:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"expected a conv layer or its weight (C_out, C_in, kH, kW), got {shape}")
    return weight.detach().float().cpu()


def filter_channel_montage(weight, *, filters=None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """A conv weight drawn one input channel at a time: row i = filter ``filters[i]``, column j =
    input channel j.

    Each filter (all its input channels together) is divided by its largest absolute weight
    and mapped to [0, 1]: 0.5 (grey) is a zero weight, 1 (white) the largest positive, 0
    (black) the most negative one. ``filters``: which output filters to draw (default: all).
    """
    w = _weight(weight)
    if filters is not None:
        idx = torch.as_tensor(list(filters), dtype=torch.long)
        if idx.numel() == 0 or idx.min() < 0 or idx.max() >= w.shape[0]:
            raise ValueError(f"filters must be indices in 0..{w.shape[0] - 1}, got {list(filters)}")
        w = w[idx]
    n, c, kh, kw = w.shape
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12)
    tiles = (0.5 + 0.5 * w / scale[:, None, None, None]).numpy()
    canvas = np.full((n * (kh + pad) + pad, c * (kw + pad) + pad), pad_value, dtype=np.float32)
    for i in range(n):
        for j in range(c):
            y, x = pad + i * (kh + pad), pad + j * (kw + pad)
            canvas[y:y + kh, x:x + kw] = tiles[i, j]
    return canvas


def show_filter_channels(weight, *, filters=None, title: str | None = None, ax=None,
                         panel_size: float = 6.0, save=None):
    """Draw a conv layer's filters per input channel in greyscale (see :func:`filter_channel_montage`);
    returns the Figure. Rows are filters, columns input channels; axis labels say so."""
    montage = filter_channel_montage(weight, filters=filters)
    fig, axis = _axis(ax, (panel_size, panel_size * montage.shape[0] / montage.shape[1] + 0.5))
    axis.imshow(montage, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_xlabel("input channel (one column each)", fontsize=9)
    axis.set_ylabel("filter (one row each)", fontsize=9)
    if title:
        axis.set_title(title, fontsize=10)
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=120)
    return fig
