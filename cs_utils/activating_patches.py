"""Maximally activating patches: the image regions that make a channel fire most.

:func:`top_activations` finds the ``k`` largest activations of each channel of a
layer over a set of images (a :class:`TopActivations`: value, image, row and column
of each unit), optionally one per image or group and only where the unit's whole
receptive field lies inside the image; :func:`crop_patches` cuts out each unit's
receptive-field patch (see :mod:`cs_utils.receptive_fields`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .hooks import evaluating, extract_features, get_layer
from .receptive_fields import ReceptiveField
from .runtime import model_device, progress_bar
from .validation import model_dtype, positive_int, validate_image

__all__ = ["TopActivations", "crop_patches", "top_activations"]


@dataclass(frozen=True)
class TopActivations:
    """For each channel (row), the top-k units: ``value``, ``image`` index, ``row``, ``col`` (all (C, k))."""

    layer: str
    channels: tuple[int, ...]
    value: torch.Tensor
    image: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor


def top_activations(model: nn.Module, images: torch.Tensor, layer: str, channels, *, k: int = 9,
                    one_per_image: bool = True, groups=None, field: ReceptiveField | None = None,
                    batch_size: int = 32, progress: bool = True) -> TopActivations:
    """The ``k`` largest activations of each channel of ``layer`` over all ``images``.

    Every image goes through the model (eval mode, restored after; the forward
    pass stops after ``layer``). With ``one_per_image`` (default) each image
    contributes at most one unit per channel (its largest), so the top ``k``
    come from ``k`` different images; ``groups`` (one id per image, e.g. the
    photo each crop came from) allows at most one unit per group instead.
    ``field``: the layer's :class:`ReceptiveField` for these images; when given,
    only units whose whole field lies inside the image count (units at the
    border also see the padding, and some channels respond to its edge).
    Returns a :class:`TopActivations`.
    """
    validate_image(images, "images")
    k = positive_int(k, "k")
    batch_size = positive_int(batch_size, "batch_size")
    channels = [int(c) for c in ([channels] if isinstance(channels, int) else channels)]
    if not channels:
        raise ValueError("channels is empty: name at least one channel")
    if groups is not None:
        groups = torch.as_tensor(groups).reshape(-1).cpu()
        if len(groups) != len(images):
            raise ValueError(f"groups needs one id per image ({len(images)}), got {len(groups)}")
        one_per_image = True
    if field is not None and field.input_size != tuple(images.shape[-2:]):
        raise ValueError(f"the receptive field was computed for {field.input_size} inputs but the images "
                         f"are {tuple(images.shape[-2:])}")
    get_layer(model, layer)
    device, dtype = model_device(model), model_dtype(model)
    per_image_best, per_image_where, all_maps = [], [], []
    map_width = 0
    starts = range(0, len(images), batch_size)
    with torch.no_grad(), evaluating(model):
        for i in progress_bar(starts, total=len(starts), desc=f"activations of {layer}", enabled=progress):
            out = extract_features(model, images[i:i + batch_size].to(device, dtype), [layer])[layer]
            if out.dim() != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}, not a spatial map "
                                 "(N, C, H, W); pick a convolutional layer")
            bad = [c for c in channels if not 0 <= c < out.shape[1]]
            if bad:
                raise IndexError(f"channels {bad} do not exist: {layer!r} has {out.shape[1]} channels "
                                 f"(0..{out.shape[1] - 1})")
            maps = out[:, channels].float().cpu()                      # (B, C, H, W)
            if field is not None:
                maps = maps.masked_fill(~_inside_mask(field, maps.shape[-2:]), -math.inf)
            map_width = maps.shape[-1]
            if one_per_image:
                best, where = maps.flatten(2).max(2)                   # (B, C)
                per_image_best.append(best)
                per_image_where.append(where)
            else:
                all_maps.append(maps)
    if one_per_image:
        best = torch.cat(per_image_best).T                             # (C, N)
        where = torch.cat(per_image_where).T
        ids = groups if groups is not None else torch.arange(best.shape[1])
        available = len(torch.unique(ids))
        if k > available:
            raise ValueError(f"k={k} but there are only {available} images (one unit per "
                             f"{'group' if groups is not None else 'image'})")
        picks = []
        for row in best:
            chosen, seen = [], set()
            for index in torch.argsort(row, descending=True, stable=True).tolist():
                if int(ids[index]) not in seen:
                    seen.add(int(ids[index]))
                    chosen.append(index)
                    if len(chosen) == k:
                        break
            picks.append(chosen)
        image = torch.tensor(picks)
        value, flat_pos = best.gather(1, image), where.gather(1, image)
    else:
        maps = torch.cat(all_maps)                                     # (N, C, H, W)
        n, c, h, w = maps.shape
        flat = maps.permute(1, 0, 2, 3).reshape(c, -1)
        if k > flat.shape[1]:
            raise ValueError(f"k={k} but there are only {flat.shape[1]} units per channel")
        value, index = flat.topk(k, dim=1)
        image, flat_pos = index // (h * w), index % (h * w)
    if torch.isinf(value).any():
        raise ValueError(f"fewer than k={k} units have their whole receptive field inside the image; "
                         "use larger images, a shallower layer or field=None")
    return TopActivations(layer, tuple(channels), value, image, flat_pos // map_width, flat_pos % map_width)


def _inside_mask(field: ReceptiveField, shape) -> torch.Tensor:
    """(H, W) bool: units whose whole receptive field lies inside the image."""
    masks = []
    for d in range(2):
        start = field.offset[d] + torch.arange(shape[d]) * field.stride[d]
        masks.append((start >= 0) & (start + field.size[d] <= field.input_size[d]))
    return masks[0][:, None] & masks[1][None, :]


def crop_patches(images: torch.Tensor, top: TopActivations, field: ReceptiveField, *,
                 fill: float = 0.5) -> torch.Tensor:
    """The receptive-field patch of every unit in ``top``: (C, k, 3, size_h, size_w).

    Each patch is the exact input box of its unit; where the box reaches past
    the image border (padding), the patch is filled with ``fill`` (grey), so
    every patch shows the unit's field at the same scale and position.
    """
    validate_image(images, "images")
    if tuple(images.shape[-2:]) != field.input_size:
        raise ValueError(f"the receptive field was computed for {field.input_size} inputs but the images "
                         f"are {tuple(images.shape[-2:])}")
    c, k = top.value.shape
    out = torch.full((c, k, 3, *field.size), float(fill), dtype=images.dtype, device=images.device)
    for i in range(c):
        for j in range(k):
            r, col = int(top.row[i, j]), int(top.col[i, j])
            top_px, left, bottom, right = field.box(r, col, clip=True)
            full_top, full_left, _, _ = field.box(r, col, clip=False)
            dy, dx = top_px - full_top, left - full_left
            out[i, j, :, dy:dy + bottom - top_px, dx:dx + right - left] = \
                images[int(top.image[i, j]), :, top_px:bottom, left:right]
    return out
