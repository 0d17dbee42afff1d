"""Plot helpers: each returns the matplotlib Figure, accepts ``ax=`` and ``save=``.

No global matplotlib settings are changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["overlay_heatmap", "show_images"]


def _image_list(images) -> list[np.ndarray]:
    """A list of (H, W, 3) or (H, W) float arrays in [0, 1] from tensors, arrays or a batch."""
    from .image import to_numpy

    if isinstance(images, torch.Tensor):
        t = images.detach()
        if t.dim() == 4:
            return [to_numpy(t[i]) for i in range(t.shape[0])]
        if t.dim() in (2, 3):
            return [to_numpy(t) if t.dim() == 3 else t.float().cpu().numpy()]
        raise ValueError(f"expected images of shape (N, 3, H, W), (3, H, W) or (H, W), got {tuple(t.shape)}")
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        return [_array(images)]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [_array(a) for a in images]
    out = []
    for item in images:
        if isinstance(item, torch.Tensor):
            out.extend(_image_list(item))
        else:
            out.append(_array(np.asarray(item)))
    return out


def _array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255
    return a.astype(np.float32)


def _finish(fig, save):
    if save is not None:
        fig.savefig(Path(save), bbox_inches="tight", dpi=120)
    return fig


def _axes_for(n: int, ax, ncols, panel_size):
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) < n:
            raise ValueError(f"got {len(axes)} axes for {n} images; pass one Axes per image")
        return axes[0].figure, axes[:n]
    ncols = min(n, ncols or min(n, 8))
    nrows = math.ceil(n / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows + 0.3),
                             squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.axis("off")
    return fig, axes[:n]


def show_images(images, titles=None, *, ncols: int | None = None, ax=None, cmap: str = "gray",
                panel_size: float = 2.5, suptitle: str | None = None, save=None):
    """Draw images in a grid and return the Figure.

    ``images``: a batch tensor (N, 3, H, W) in [0, 1], a single image, a list of
    tensors or numpy arrays ((H, W, 3) or (H, W); 2-D arrays use ``cmap`` with
    their own range). ``titles``: one string per image. ``ax``: an Axes or a
    sequence of Axes to draw into (one per image). ``save``: a file path.
    """
    arrays = _image_list(images)
    if not arrays:
        raise ValueError("no images to show")
    if titles is not None:
        titles = [titles] if isinstance(titles, str) else list(titles)
        if len(titles) != len(arrays):
            raise ValueError(f"got {len(titles)} titles for {len(arrays)} images")
    fig, axes = _axes_for(len(arrays), ax, ncols, panel_size)
    for i, (a, axis) in enumerate(zip(arrays, axes)):
        if a.ndim == 2:
            axis.imshow(a, cmap=cmap)
        else:
            axis.imshow(np.clip(a, 0, 1))
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
        if titles is not None:
            axis.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, save)


def _resize_map(heatmap: np.ndarray, shape) -> np.ndarray:
    if heatmap.shape == tuple(shape):
        return heatmap
    t = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


def overlay_heatmap(image, heatmap, *, alpha: float = 0.6, cmap: str = "jet", normalize: bool = True,
                    percentile: float | None = None, fade: bool = True, title: str | None = None,
                    colorbar: bool = False, ax=None, save=None):
    """Draw ``heatmap`` (H', W') over ``image`` and return the Figure.

    ``image``: one image, (1, 3, H, W) or (3, H, W) tensor in [0, 1] or an
    (H, W, 3) array. ``heatmap``: a 2-D tensor or array; it is resized
    (bilinear) to the image size and, with ``normalize``, scaled to [0, 1]
    (with ``percentile``, e.g. 99, values above that percentile saturate:
    useful for speckled gradient maps). ``alpha`` is the largest opacity of the
    heatmap; with ``fade`` (default) each pixel's opacity grows with its value,
    so low values leave the photo visible. The inputs are not modified.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    arrays = _image_list(image)
    if len(arrays) != 1:
        raise ValueError(f"overlay_heatmap draws one image, got {len(arrays)}")
    img = arrays[0]
    h = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(
        heatmap, dtype=np.float32)
    h = np.squeeze(h)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {np.shape(heatmap)}")
    h = _resize_map(h, img.shape[:2])
    if percentile is not None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        h = np.minimum(h, np.percentile(h, percentile))
    if normalize:
        lo, hi = float(h.min()), float(h.max())
        h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    fig, axes = _axes_for(1, ax, 1, 4.0)
    axis = axes[0]
    axis.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
    opacity = alpha
    if fade:
        span = float(h.max() - h.min())
        opacity = alpha * ((h - h.min()) / span if span > 0 else np.zeros_like(h))
    shown = axis.imshow(h, cmap=cmap, alpha=opacity, vmin=0 if normalize else None,
                        vmax=1 if normalize else None)
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=9)
    if colorbar:
        fig.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    return _finish(fig, save)
