"""Losses on feature maps and images: Gram matrix, content, style and total variation.

Pure functions of their inputs (nothing is modified), vectorised, and
differentiable in float32 and float64. The normalisations are part of the
definition, so they are spelled out here once:

* ``gram_matrix(F)`` for ``F`` of shape (N, C, H, W) is ``F F^T`` over the
  flattened positions, divided by ``C*H*W`` when ``normalize=True``
  (Gatys et al. 2015 use the unnormalised sum; dividing makes the Gram of
  different layers and image sizes comparable).
* ``content_loss`` is ``weight * sum((F - F_target)^2)`` (CS231n).
* ``style_loss`` is ``sum_l w_l * mean((G_l - A_l)^2)``: each layer's squared
  Gram error divided by the number of Gram entries (``N*C*C``).
* ``tv_loss`` is Mahendran & Vedaldi's (2015) total variation
  ``sum (dx^2 + dy^2)^(beta/2)`` over the (H-1) x (W-1) pixels that have
  both a right and a lower neighbour, summed over channels and images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = ["content_loss", "gram_loss", "gram_losses", "gram_matrix", "style_loss", "tv_loss"]


def _check_features(features, what="features") -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"{what} must have shape (N, C, H, W), got {tuple(features.shape)}")


def gram_matrix(features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Gram matrix of feature maps: (N, C, H, W) -> (N, C, C).

    ``G[n, c, d] = sum_{h,w} F[n, c, h, w] * F[n, d, h, w]``, divided by
    ``C*H*W`` when ``normalize`` is true.
    """
    _check_features(features)
    ### BEGIN SOLUTION
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    gram = flat @ flat.transpose(1, 2)
    if normalize:
        gram = gram / (c * h * w)
    return gram
    ### END SOLUTION


def content_loss(features: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """``weight * sum((features - target)^2)``: how far the features are from the content's."""
    _check_features(features)
    if features.shape != target.shape:
        raise ValueError(f"features {tuple(features.shape)} and target {tuple(target.shape)} differ in "
                         "shape; compute both at the same layer from images of the same size")
    ### BEGIN SOLUTION
    return weight * (features - target).pow(2).sum()
    ### END SOLUTION


def style_loss(features: Sequence[torch.Tensor], target_grams: Sequence[torch.Tensor],
               weights: float | Sequence[float] = 1.0) -> torch.Tensor:
    """``sum_l w_l * mean((gram_matrix(features[l]) - target_grams[l])^2)``.

    ``features`` are the current image's feature maps at the style layers,
    ``target_grams`` the (normalised) Gram matrices of the style image at the
    same layers, computed once. ``weights`` is one number for every layer or
    one per layer. The style image may have any size: Gram matrices are C x C.
    """
    features, target_grams = list(features), list(target_grams)
    if len(features) != len(target_grams):
        raise ValueError(f"{len(features)} feature maps but {len(target_grams)} target Gram matrices; "
                         "give one target per style layer")
    if not features:
        raise ValueError("style_loss needs at least one layer")
    if isinstance(weights, (int, float)):
        weights = [float(weights)] * len(features)
    weights = list(weights)
    if len(weights) != len(features):
        raise ValueError(f"{len(weights)} weights for {len(features)} style layers")
    for i, (f, a) in enumerate(zip(features, target_grams)):
        _check_features(f, f"features[{i}]")
        if a.shape[-2:] != (f.shape[1], f.shape[1]):
            raise ValueError(f"target_grams[{i}] has shape {tuple(a.shape)} but features[{i}] has "
                             f"{f.shape[1]} channels; compute targets with gram_matrix at the same layers")
    ### BEGIN SOLUTION
    loss = features[0].new_zeros(())
    for f, a, w in zip(features, target_grams, weights):
        loss = loss + w * (gram_matrix(f) - a).pow(2).mean()
    return loss
    ### END SOLUTION


def _positions_by_channels(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``features`` (N, C, H, W) as a view: (N, HW, C) when stored channels-last, else (N, C, HW)."""
    n, c, h, w = features.shape
    if not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return features.reshape(n, c, h * w), False


class _GramLoss(torch.autograd.Function):
    """``sum_l weights[l] * mean((F_l F_l^T / (C_l H_l W_l) - A_l)^2)`` over layers ``l`` with its
    gradient written out: ``dL/dF = (D + D^T) F / (C H W)`` for ``D = dL/dG``, one matrix product
    per layer where autograd through ``F @ F^T`` takes two and adds them; one autograd node for
    every layer, two operations per layer each way."""

    @staticmethod
    def forward(ctx, targets, weights, *features):
        total, diffs = 0.0, []
        for f, target, weight in zip(features, targets, weights):
            n, c, h, w = f.shape
            flat, positions_first = _positions_by_channels(f)
            left, right = (flat.transpose(1, 2), flat) if positions_first else (flat, flat.transpose(1, 2))
            # G - A in one product: -A + (F F^T) / (C H W)
            diff = torch.baddbmm(-target, left, right, alpha=1.0 / (c * h * w))
            diffs.append(diff)
            total += weight * float(torch.vdot(diff.reshape(-1), diff.reshape(-1))) / diff.numel()
        ctx.save_for_backward(*features, *diffs)
        ctx.weights = weights
        return features[0].new_tensor(total)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        count = len(saved) // 2
        grads, grad = [], float(grad)
        for f, diff, weight in zip(saved[:count], saved[count:], ctx.weights):
            n, c, h, w = f.shape
            scale = grad * 2.0 * weight / (diff.numel() * c * h * w)
            sym = diff + diff.transpose(1, 2)
            flat, positions_first = _positions_by_channels(f)
            if positions_first:   # (N, HW, C) @ (C, C) is D^T F laid out channels-last; D + D^T is symmetric
                out = torch.bmm(flat, sym).mul_(scale)
                grads.append(out.reshape(n, h, w, c).permute(0, 3, 1, 2))
            else:
                grads.append(torch.bmm(sym, flat).mul_(scale).reshape(n, c, h, w))
        return (None, None, *grads)


def _gram_target(features: torch.Tensor, target, what: str) -> torch.Tensor:
    _check_features(features, what)
    n, c = features.shape[:2]
    if isinstance(target, torch.Tensor) and target.dim() == 2:
        target = target.unsqueeze(0)
    if not isinstance(target, torch.Tensor) or target.dim() != 3 or target.shape[-2:] != (c, c) \
            or target.shape[0] not in (1, n):
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"the target Gram matrix for {what} must have shape (1, {c}, {c}) or "
                         f"({n}, {c}, {c}) (features with {c} channels), got {shape}")
    return target.detach()


def gram_losses(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                weights: float | Sequence[float] = 1.0) -> torch.Tensor:
    """:func:`style_loss`'s value, ``sum_l w_l * mean((gram_matrix(features[l]) - targets[l])^2)``,
    with its backward written out (:func:`gram_loss`, every layer in one autograd node)."""
    features, targets = list(features), list(targets)
    if not features or len(features) != len(targets):
        raise ValueError(f"give one target per feature map: {len(features)} feature maps, "
                         f"{len(targets)} targets")
    weights = [float(weights)] * len(features) if isinstance(weights, (int, float)) else \
        [float(w) for w in weights]
    if len(weights) != len(features):
        raise ValueError(f"{len(weights)} weights for {len(features)} layers")
    targets = [_gram_target(f, a, f"features[{i}]") for i, (f, a) in enumerate(zip(features, targets))]
    return _GramLoss.apply(tuple(targets), tuple(weights), *features)


def gram_loss(features: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """One layer's term of :func:`style_loss`: ``weight * mean((gram_matrix(features) - target)^2)``,
    the mean over the N x C x C entries (``target`` (C, C), (1, C, C) or (N, C, C)).

    The same value as ``style_loss([features], [target], weight)``; its backward is written out
    (one matrix product instead of autograd's two and a sum), the cost that matters when an
    image is optimised for hundreds of evaluations. ``target`` is a constant (no gradient flows
    to it; use :func:`style_loss` for that), and the gradient cannot be differentiated again.
    Keeps ``features``' memory layout (channels-last stays channels-last).
    """
    return gram_losses([features], [target], weight)


def tv_loss(x: torch.Tensor, weight: float = 1.0, beta: float = 2.0) -> torch.Tensor:
    """Total variation ``weight * sum ((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2)^(beta/2)``.

    ``x`` is (N, C, H, W); the sum runs over images, channels and the
    (H-1) x (W-1) pixels with both neighbours. ``beta=2`` is the squared
    variation of CS231n; ``beta<2`` (Mahendran & Vedaldi use 1-2) allows
    sharper edges. For ``beta<2`` a tiny 1e-8 is added inside the power so
    that the gradient stays finite where the image is flat.
    """
    _check_features(x, "x")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    ### BEGIN SOLUTION
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    squared = dx.pow(2) + dy.pow(2)
    if beta == 2:
        return weight * squared.sum()
    return weight * (squared + 1e-8).pow(beta / 2).sum()
    ### END SOLUTION
