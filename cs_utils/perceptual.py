"""The pieces of fast-style training shared by one process and many: random crops, Gram targets, the loss.

:func:`cs_utils.fast_style_training.train_fast_style` (one process, photos in memory) and
:mod:`cs_utils.style_training` (a folder of photos, ``torchrun``) both draw crops with
:func:`random_square_crop`, compute the style targets with :func:`style_gram_targets` and the
three weighted terms of Johnson et al.'s perceptual loss with :func:`perceptual_terms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import extract_features
from .losses import content_loss, gram_matrix, style_loss, tv_loss

__all__ = ["perceptual_terms", "random_photo_crops", "random_square_crop", "resize_short_side",
           "style_gram_targets"]


def random_square_crop(photo: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random square crop of ``photo`` (1, 3, H, W) resized to ``size``: a random side between
    ``size`` (or the shorter side, if smaller) and the shorter side, a random position, a random
    horizontal flip. Returns (1, 3, size, size)."""
    h, w = photo.shape[-2:]
    short = min(h, w)
    low = min(size, short)
    side = low + int(torch.randint(short - low + 1, (1,), generator=generator))
    top = int(torch.randint(h - side + 1, (1,), generator=generator))
    left = int(torch.randint(w - side + 1, (1,), generator=generator))
    crop = photo[..., top:top + side, left:left + side]
    if side != size:
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=side > size,
                             align_corners=False).clamp(0, 1)
    if bool(torch.randint(2, (1,), generator=generator)):
        crop = crop.flip(-1)
    return crop


def random_photo_crops(photos, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random square crops resized to ``size`` (N, 3, size, size), each of a random photo of
    ``photos`` ((1, 3, H, W) each; see :func:`random_square_crop`)."""
    crops = []
    for _ in range(n):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        crops.append(random_square_crop(photo, size, generator))
    return torch.cat(crops)


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` (N, 3, H, W) resized so that its shorter side is ``size`` pixels."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    return F.interpolate(image, size=(round(h * scale), round(w * scale)), mode="bilinear",
                         antialias=scale < 1, align_corners=False).clamp(0, 1)


def style_gram_targets(model: nn.Module, styles: dict[str, torch.Tensor], style_layers: Sequence[str],
                       style_size: int, device) -> list[torch.Tensor]:
    """Per style layer, the Gram matrices of every style image, stacked: (num_styles, C, C).

    Each style image is resized to ``style_size`` on its shorter side first. Call it with the
    model in eval mode; no graph is built."""
    with torch.no_grad():
        grams = {name: extract_features(model, resize_short_side(image.to(device), style_size), style_layers)
                 for name, image in styles.items()}
        return [torch.cat([gram_matrix(grams[name][layer]) for name in styles]) for layer in style_layers]


def perceptual_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: Sequence[torch.Tensor],
                     style_index: torch.Tensor, *, style_layers: Sequence[str], content_layer: str,
                     style_weight: float, content_weight: float, tv_weight: float):
    """The weighted ``(content, style, tv)`` terms for crops ``x`` and the network's output ``y``.

    content: ``content_weight * mean((phi_c(y) - phi_c(x))^2)``; style: ``style_weight * sum_l
    mean((G_l(y) - A_l)^2)`` with ``A_l = targets[l][style_index]``; tv: ``tv_weight * mean of the
    squared variation``. Every term is a mean over the batch, so a batch split over processes
    whose gradients are averaged gives the gradient of the whole batch."""
    layers = list(dict.fromkeys(list(style_layers) + [content_layer]))
    with torch.no_grad():
        content_target = extract_features(model, x, [content_layer])[content_layer]
    feats = extract_features(model, y, layers)
    content_term = content_loss(feats[content_layer], content_target,
                                weight=content_weight / content_target.numel())
    style_term = style_loss([feats[layer] for layer in style_layers],
                            [target[style_index] for target in targets], weights=style_weight)
    tv_term = tv_loss(y, weight=tv_weight / y.numel())
    return content_term, style_term, tv_term
