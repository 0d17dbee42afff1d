"""Plot helpers: each returns the matplotlib Figure, accepts ``ax=`` and ``save=``.

No global matplotlib settings are changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["filter_montage", "overlay_heatmap", "plot_embedding", "show_filters", "show_image_rows",
           "show_images", "show_maps", "show_thumbnails", "thumbnail_canvas"]


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


def _axes_for(n: int, ax, ncols, panel_size, *, title_lines: int = 0):
    """``(figure, axes)`` for ``n`` panels: ``ax`` as given, or a new grid; ``title_lines``: the most lines
    of a panel's title (each row gets room for them, and the layout keeps titles off the images)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) < n:
            raise ValueError(f"got {len(axes)} axes for {n} images; pass one Axes per image")
        return axes[0].figure, axes[:n]
    ncols = min(n, ncols or min(n, 8))
    nrows = math.ceil(n / ncols)
    row_height = panel_size + 0.16 * title_lines
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, row_height * nrows + 0.3),
                             squeeze=False, layout="constrained" if title_lines else None)
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
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    fig, axes = _axes_for(len(arrays), ax, ncols, panel_size, title_lines=lines)
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


def show_maps(x: torch.Tensor, rows: dict, titles=None, *, percentile: float | dict | None = 99.0,
              panel_size: float = 2.2, save=None):
    """One column per image: the photos on top, then one row per entry of ``rows``; returns the Figure.

    ``rows`` maps a row label to (N, H, W) maps, drawn over the photo with
    :func:`overlay_heatmap` (values above ``percentile`` saturate), or
    to (N, 3, H, W) images in [0, 1] (e.g. :func:`cs_utils.gradient_image`, a cut-out),
    drawn as they are. ``percentile`` may also be a dict with one value per row
    label. ``titles``: one per column.
    """
    import matplotlib.pyplot as plt

    n = x.shape[0]
    for label, maps in rows.items():
        if maps.shape[0] != n or maps.dim() not in (3, 4):
            raise ValueError(f"row {label!r}: expected {n} maps (N, H, W) or images (N, 3, H, W), got "
                             f"shape {tuple(maps.shape)}")
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(panel_size * n, panel_size * (len(rows) + 1)),
                             squeeze=False)
    show_images(x.detach().cpu(), titles, ax=list(axes[0]))
    for r, (label, maps) in enumerate(rows.items(), start=1):
        maps = maps.detach().cpu()
        for i in range(n):
            if maps.dim() == 3:
                saturate = percentile.get(label, 99.0) if isinstance(percentile, dict) else percentile
                overlay_heatmap(x[i].detach().cpu(), maps[i], percentile=saturate, ax=axes[r, i])
            else:
                show_images(maps[i], ax=axes[r, i])
        axes[r, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=120)
    return fig


# --------------------------------------------------------------------------- filters, embeddings, patches

def filter_montage(weight, *, ncols: int | None = None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Conv filters tiled into one image: (H, W, 3) for RGB filters, (H, W) for one input channel.

    Each filter is rescaled on its own to [0, 1] (:func:`cs_utils.filter_images`);
    ``pad`` pixels of ``pad_value`` separate them; ``ncols`` filters per row
    (default: about square).
    """
    from .small_cnn import filter_images

    tiles = filter_images(weight)
    n, c, kh, kw = tiles.shape
    if c not in (1, 3):
        raise ValueError(f"filters with {c} input channels cannot be drawn as images; "
                         "pass a first layer (1 or 3 input channels)")
    ncols = ncols or math.ceil(math.sqrt(n))
    if ncols <= 0:
        raise ValueError(f"ncols must be positive, got {ncols}")
    nrows = math.ceil(n / ncols)
    canvas = np.full((nrows * (kh + pad) + pad, ncols * (kw + pad) + pad, c), pad_value, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (kh + pad), pad + col * (kw + pad)
        canvas[top:top + kh, left:left + kw] = tiles[i].permute(1, 2, 0).cpu().numpy()
    return canvas[..., 0] if c == 1 else canvas


def show_filters(weight, *, ncols: int | None = None, title: str | None = None, ax=None,
                 panel_size: float = 4.0, save=None):
    """Draw first-layer filters as a grid of small images (each rescaled on its own); returns the Figure.

    ``weight``: a conv layer or its weight (C_out, 1 or 3, kH, kW). RGB filters
    are drawn in colour, one-channel filters in grey; pixels are drawn as blocks.
    """
    montage = filter_montage(weight, ncols=ncols)
    fig, axes = _axes_for(1, ax, 1, panel_size)
    axis = axes[0]
    axis.imshow(montage, cmap="gray" if montage.ndim == 2 else None, vmin=0, vmax=1,
                interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=10)
    return _finish(fig, save)


def plot_embedding(points, labels, class_names=None, *, title: str | None = None, ax=None,
                   marker_size: float = 6.0, save=None):
    """Scatter 2-D points (N, 2) coloured by class, with a legend; returns the Figure."""
    import matplotlib.pyplot as plt

    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {p.shape}")
    if y.shape != (len(p),):
        raise ValueError(f"need one label per point: {len(p)} points, labels of shape {y.shape}")
    classes = np.unique(y)
    if class_names is not None and len(class_names) <= classes.max():
        raise ValueError(f"class_names has {len(class_names)} names but labels go up to {classes.max()}")
    fig, axes = _axes_for(1, ax, 1, 5.0)
    axis = axes[0]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        keep = y == c
        name = class_names[c] if class_names is not None else str(c)
        axis.scatter(p[keep, 0], p[keep, 1], s=marker_size, color=cmap(i % cmap.N), label=name, alpha=0.8,
                     linewidths=0)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.8)
    if title:
        axis.set_title(title, fontsize=10)
    return _finish(fig, save)


def thumbnail_canvas(points, images, *, canvas_size: int = 1200, thumb_size: int = 28,
                     background: float = 1.0, grid: bool = False) -> np.ndarray:
    """Each image drawn at its 2-D position: an (S, S, 3) float array in [0, 1].

    ``points`` (N, 2) are scaled to fill the canvas (each axis on its own, y up);
    ``images`` (N, C, h, w) in [0, 1] (C = 1 or 3) are resized to ``thumb_size``
    pixels. Later images are drawn over earlier ones. With ``grid``, the canvas
    is cut into cells of ``thumb_size`` and each cell shows the one image whose
    point lies nearest to the cell's centre (no overlaps; some images are not shown).
    """
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points, float)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {p.shape}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError("images must be a tensor (N, 1 or 3, h, w) in [0, 1]")
    if len(images) != len(p):
        raise ValueError(f"got {len(p)} points for {len(images)} images")
    if thumb_size >= canvas_size:
        raise ValueError(f"thumb_size ({thumb_size}) must be smaller than canvas_size ({canvas_size})")
    thumbs = torch.nn.functional.interpolate(images.detach().float().cpu(), size=(thumb_size, thumb_size),
                                             mode="bilinear", align_corners=False, antialias=True)
    thumbs = thumbs.clamp(0, 1).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    lo = p.min(0)
    span = np.where(p.max(0) > lo, p.max(0) - lo, 1.0)
    unit = (p - lo) / span                                    # in [0, 1]^2
    room = canvas_size - thumb_size
    lefts = np.round(unit[:, 0] * room).astype(int)
    tops = np.round((1 - unit[:, 1]) * room).astype(int)
    canvas = np.full((canvas_size, canvas_size, 3), background, dtype=np.float32)
    if grid:
        cells = canvas_size // thumb_size
        centre_x, centre_y = lefts + thumb_size / 2, tops + thumb_size / 2
        col = np.minimum((centre_x // thumb_size).astype(int), cells - 1)
        row = np.minimum((centre_y // thumb_size).astype(int), cells - 1)
        miss = (centre_x - (col + 0.5) * thumb_size) ** 2 + (centre_y - (row + 0.5) * thumb_size) ** 2
        best: dict = {}
        for i in np.argsort(miss, kind="stable"):
            best.setdefault((row[i], col[i]), i)
        for (r, c), i in best.items():
            canvas[r * thumb_size:(r + 1) * thumb_size, c * thumb_size:(c + 1) * thumb_size] = thumbs[i]
        return canvas
    for left, top, thumb in zip(lefts, tops, thumbs):
        canvas[top:top + thumb_size, left:left + thumb_size] = thumb
    return canvas


def show_thumbnails(points, images, *, canvas_size: int = 1200, thumb_size: int = 28, grid: bool = False,
                    background: float = 1.0, title: str | None = None, ax=None, panel_size: float = 8.0,
                    save=None):
    """Draw :func:`thumbnail_canvas` (each image at its 2-D position); returns the Figure."""
    canvas = thumbnail_canvas(points, images, canvas_size=canvas_size, thumb_size=thumb_size, grid=grid,
                              background=background)
    fig, axes = _axes_for(1, ax, 1, panel_size)
    axes[0].imshow(canvas)
    axes[0].axis("off")
    if title:
        axes[0].set_title(title, fontsize=10)
    return _finish(fig, save)


def show_image_rows(rows, row_titles=None, titles=None, *, panel_size: float = 1.6,
                    suptitle: str | None = None, save=None):
    """A grid with one row per entry of ``rows`` (each a batch (k, 3, H, W) or list of images).

    ``row_titles``: one label per row, written left of the row; ``titles``: per
    row, a list of per-image titles. Used for nearest neighbours (query, then
    its neighbours) and for maximally activating patches (one row per channel).
    Returns the Figure.
    """
    import matplotlib.pyplot as plt

    arrays = [_image_list(r) for r in rows]
    if not arrays:
        raise ValueError("no rows to show")
    if row_titles is not None and len(row_titles) != len(arrays):
        raise ValueError(f"got {len(row_titles)} row titles for {len(arrays)} rows")
    if titles is not None and (len(titles) != len(arrays)
                               or any(len(t) != len(a) for t, a in zip(titles, arrays))):
        raise ValueError("titles must hold one list of titles per row, one title per image")
    ncols = max(len(a) for a in arrays)
    fig, grid = plt.subplots(len(arrays), ncols, figsize=(panel_size * ncols, panel_size * len(arrays) + 0.4),
                             squeeze=False, layout="constrained")
    for r, row in enumerate(arrays):
        for c in range(ncols):
            axis = grid[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.axis("off")
                continue
            a = row[c]
            axis.imshow(np.clip(a, 0, 1), cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
            if titles is not None:
                axis.set_title(titles[r][c], fontsize=7)
        if row_titles is not None:
            grid[r, 0].set_ylabel(row_titles[r], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, save)
