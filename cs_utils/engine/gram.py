"""The style loss with its backward written out: what texture synthesis and style transfer optimise.

:func:`gram_losses` has the value of :func:`cs_utils.losses.style_loss` and its gradient, in one
autograd node for every layer. Autograd through ``F @ F^T`` takes two matrix products per layer
and adds them; the gradient written out, ``dL/dF = (D + D^T) F / (C H W)`` for ``D = dL/dG``,
takes one, and keeps channels-last features channels-last. Across hundreds of evaluations of an
image optimisation that is what it saves.

The node supplies the backward only (the rule of :mod:`cs_utils.engine`): its forward takes the
Gram matrices from :func:`cs_utils.losses.gram_matrix` and the value from
:func:`cs_utils.losses.style_loss`, both looked up when it runs, so the functions a student wrote
there are the ones used (until they are written, texture synthesis and style transfer raise their
``NotImplementedError``). The gradient is that of ``style_loss`` as the module defines it,
``sum_l w_l * mean((G_l - A_l)^2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = ["gram_loss", "gram_losses"]


def _lesson():
    """:mod:`cs_utils.losses` as it is now (a grader or a notebook may have put the student's there)."""
    from .. import losses

    return losses


def _positions_by_channels(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``features`` (N, C, H, W) as a view: (N, HW, C) when stored channels-last, else (N, C, HW)."""
    n, c, h, w = features.shape
    if not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return features.reshape(n, c, h * w), False


class _GramLoss(torch.autograd.Function):
    """Forward: ``style_loss(features, targets, weights)`` and ``D_l = gram_matrix(F_l) - A_l``, both from
    the lesson's functions. Backward: ``w_l * 2 / numel(D_l) * (D_l + D_l^T) F_l / (C_l H_l W_l)``, one
    matrix product per layer, one autograd node for every layer."""

    @staticmethod
    def forward(ctx, losses, targets, weights, *features):
        diffs = [losses.gram_matrix(f) - target for f, target in zip(features, targets)]
        value = torch.as_tensor(losses.style_loss(list(features), list(targets), list(weights)),
                                dtype=features[0].dtype, device=features[0].device)
        ctx.save_for_backward(*features, *diffs)
        ctx.weights = weights
        return value.detach().clone()

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
        return (None, None, None, *grads)


def _gram_target(features: torch.Tensor, target, what: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise ValueError(f"{what} must be a tensor of shape (N, C, H, W), got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
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
    """``cs_utils.losses.style_loss(features, targets, weights)``, its value computed by that function,
    with the backward written out (:func:`gram_loss`, every layer in one autograd node)."""
    features, targets = list(features), list(targets)
    if not features or len(features) != len(targets):
        raise ValueError(f"give one target per feature map: {len(features)} feature maps, "
                         f"{len(targets)} targets")
    weights = [float(weights)] * len(features) if isinstance(weights, (int, float)) else \
        [float(w) for w in weights]
    if len(weights) != len(features):
        raise ValueError(f"{len(weights)} weights for {len(features)} layers")
    targets = [_gram_target(f, a, f"features[{i}]") for i, (f, a) in enumerate(zip(features, targets))]
    return _GramLoss.apply(_lesson(), tuple(targets), tuple(weights), *features)


def gram_loss(features: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """One layer's term of :func:`cs_utils.losses.style_loss`:
    ``weight * mean((gram_matrix(features) - target)^2)``, the mean over the N x C x C entries
    (``target`` (C, C), (1, C, C) or (N, C, C)).

    The same value as ``style_loss([features], [target], weight)`` (computed by it); the backward
    is written out (one matrix product instead of autograd's two and a sum), the cost that matters
    when an image is optimised for hundreds of evaluations. ``target`` is a constant (no gradient
    flows to it; use ``style_loss`` for that), and the gradient cannot be differentiated again.
    Keeps ``features``' memory layout (channels-last stays channels-last).
    """
    return gram_losses([features], [target], weight)
