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
from .style import channel_moments, moment_loss

__all__ = ["perceptual_terms", "random_photo_crops", "random_square_crop", "resize_short_side",
           "style_gram_targets", "style_moment_targets"]


def random_square_crop(photo: torch.Tensor, size: int, generator: torch.Generator, *,
                       max_side: int | None = None) -> torch.Tensor:
    """A random square crop of ``photo`` (1, 3, H, W) resized to ``size``: a random side between
    ``size`` (or the shorter side, if smaller) and the shorter side (or ``max_side``, if smaller), a
    random position, a random horizontal flip. Returns (1, 3, size, size)."""
    h, w = photo.shape[-2:]
    short = min(h, w) if max_side is None else max(min(h, w, max_side), 1)
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


def style_moment_targets(model: nn.Module, styles: dict[str, torch.Tensor], style_layers: Sequence[str],
                         style_size: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per style layer, then for the pixels' colours, the channel means and standard deviations
    (:func:`cs_utils.style.channel_moments`) of every style image, stacked: ``(mean, std)``, each
    (num_styles, C). The images are resized as in :func:`style_gram_targets`; no graph is built."""
    with torch.no_grad():
        resized = {name: resize_short_side(image.to(device), style_size) for name, image in styles.items()}
        feats = {name: extract_features(model, image, style_layers) for name, image in resized.items()}
        per_style = [[channel_moments(feats[name][layer]) for layer in style_layers]
                     + [channel_moments(resized[name])] for name in styles]
        return [(torch.cat([moments[i][0] for moments in per_style]),
                 torch.cat([moments[i][1] for moments in per_style])) for i in range(len(style_layers) + 1)]


def perceptual_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: Sequence[torch.Tensor],
                     style_index: torch.Tensor, *, style_layers: Sequence[str], content_layer: str,
                     style_weight: float, content_weight: float, tv_weight: float,
                     normalize: bool = False,
                     moments: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                     moment_weight: float = 0.0):
    """The weighted ``(content, style, tv)`` terms for crops ``x`` and the network's output ``y``.

    With ``normalize=False`` (Johnson et al.'s loss): content ``content_weight *
    mean((phi_c(y) - phi_c(x))^2)``; style ``style_weight * sum_l mean((G_l(y) - A_l)^2)`` with
    ``A_l = targets[l][style_index]``. With ``normalize=True`` every error is relative, as in
    :func:`cs_utils.style_transfer`: content ``content_weight * mean_n ||phi_c(y_n) -
    phi_c(x_n)||^2 / ||phi_c(x_n)||^2``; style ``style_weight * (sum_l mean_n mean((G_l(y_n) -
    A_l)^2) / mean(A_l^2) + moment_weight * L_moments)``, where ``L_moments`` is
    :func:`cs_utils.style.moment_loss` of the channel means and standard deviations at the style
    layers and of ``y``'s colours against ``moments`` (:func:`style_moment_targets`). tv:
    ``tv_weight * mean of the squared variation``. Every term is a mean over the batch, so a
    batch split over processes whose gradients are averaged gives the gradient of the whole
    batch."""
    layers = list(dict.fromkeys(list(style_layers) + [content_layer]))
    with torch.no_grad():
        content_target = extract_features(model, x, [content_layer])[content_layer]
    feats = extract_features(model, y, layers)
    tv_term = tv_loss(y, weight=tv_weight / y.numel())
    if not normalize:
        if moment_weight:
            raise ValueError("moment_weight needs normalize=True (the moment loss is a relative error)")
        content_term = content_loss(feats[content_layer], content_target,
                                    weight=content_weight / content_target.numel())
        style_term = style_loss([feats[layer] for layer in style_layers],
                                [target[style_index] for target in targets], weights=style_weight)
        return content_term, style_term, tv_term
    dims = tuple(range(1, content_target.dim()))
    content_term = content_weight * ((feats[content_layer] - content_target).pow(2).sum(dims)
                                     / content_target.pow(2).sum(dims).clamp_min(1e-12)).mean()
    gram_term = y.new_zeros(())
    for layer, target in zip(style_layers, targets):
        scale = target.pow(2).mean(dim=(1, 2)).clamp_min(1e-12)[style_index]
        gram_term = gram_term + ((gram_matrix(feats[layer]) - target[style_index]).pow(2).mean(dim=(1, 2))
                                 / scale).mean()
    style_term = gram_term
    if moment_weight:
        if moments is None or len(moments) != len(style_layers) + 1:
            raise ValueError("moment_weight needs moments from style_moment_targets(...): one (mean, std) "
                             "pair per style layer and one for the colours")
        chosen = [(m[style_index], s[style_index]) for m, s in moments]
        style_term = style_term + moment_weight * moment_loss([feats[layer] for layer in style_layers] + [y],
                                                              chosen)
    return content_term, style_weight * style_term, tv_term
