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

__all__ = ["content_loss", "gram_matrix", "style_loss", "tv_loss"]


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
