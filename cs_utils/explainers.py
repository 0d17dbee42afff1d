"""What the explainers share: saliency, occlusion, attribution and their evaluation.

* :func:`prepare`: the images as the model's input (a checked, detached copy on its device and
  dtype) and one class index per image;
* :func:`target_scores`: each row's score of its target class;
* :func:`fill_colors`: the color of an occluding patch or of deleted pixels;
* :func:`forward_batch_size`, :func:`gradient_batch_size`: the batch size with the least time
  per image, measured once per network and image shape
  (:func:`cs_utils.engine.batch_size.measured_batch_size`), for plain forward passes (occlusion)
  and for forward+backward passes (integrated gradients, SmoothGrad).
"""

from __future__ import annotations

import torch
from torch import nn

from .engine.batch_size import measured_batch_size
from .validation import class_indices, model_input, num_classes, positive_int

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FORWARD_BATCH_SIZES",
    "GRADIENT_BATCH_SIZES",
    "fill_colors",
    "forward_batch_size",
    "gradient_batch_size",
    "prepare",
    "target_scores",
]


def target_scores(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``scores[i, target[i]]`` for each row: the (N,) scores of the target classes.

    ``scores`` is (N, num_classes); ``target`` a LongTensor (N,). A class index
    outside ``0 .. num_classes - 1`` raises an ``IndexError`` that says the range.
    """
    if scores.dim() != 2:
        raise ValueError(f"expected class scores of shape (N, num_classes), got {tuple(scores.shape)}")
    target = target.to(scores.device)
    if target.numel() and target.max() >= scores.shape[1]:
        raise IndexError(f"class index {target.max().item()} is out of range: the model has "
                         f"{scores.shape[1]} classes (0..{scores.shape[1] - 1})")
    return scores.gather(1, target[:, None])[:, 0]


def prepare(model: nn.Module, x: torch.Tensor, target):
    """The images as the model's input (checked, detached, on its device and dtype) and the targets."""
    xd = model_input(model, x)
    return xd, class_indices(target, x.shape[0], classes=num_classes(model)).to(xd.device)


def fill_colors(x: torch.Tensor, fill) -> torch.Tensor:
    """(N, 3) patch colors: each image's mean color, or ``fill`` (a float or 3 floats in [0, 1])."""
    if fill is None:
        return x.mean(dim=(2, 3))
    color = torch.as_tensor(fill, dtype=x.dtype, device=x.device).flatten()
    if color.numel() == 1:
        color = color.expand(3)
    if color.numel() != 3 or color.min() < 0 or color.max() > 1:
        raise ValueError(f"fill must be None (the image's mean color), one grey value or 3 RGB values "
                         f"in [0, 1], got {fill!r}")
    return color.expand(x.shape[0], 3)


#: The batch sizes :func:`forward_batch_size` chooses from (occlusion's plain path).
FORWARD_BATCH_SIZES = (1, 2, 4, 8, 16, 32)

#: The smallest batch :func:`gradient_batch_size` considers, and its batch when there are fewer
#: images than two sizes to compare: on a CPU, small batches keep the activations in the caches.
DEFAULT_BATCH_SIZE = 4

#: The batch sizes :func:`gradient_batch_size` chooses from (integrated gradients, SmoothGrad).
GRADIENT_BATCH_SIZES = (DEFAULT_BATCH_SIZE, 8, 16)


def forward_batch_size(model: nn.Module, xd: torch.Tensor, copies: int) -> int:
    """The fastest batch size (per image) for plain forward passes of ``xd``'s image shape: of
    :data:`FORWARD_BATCH_SIZES` no larger than ``copies``, measured once per model, device, dtype,
    image shape and torch thread count in this process."""
    sizes = [b for b in FORWARD_BATCH_SIZES if b <= copies] or [1]
    return measured_batch_size(model, xd, sizes)


def gradient_batch_size(batch_size, model: nn.Module, xd: torch.Tensor, jobs: int) -> int:
    """``batch_size`` checked, or when it is None the measured fastest of :data:`GRADIENT_BATCH_SIZES`
    (no larger than ``jobs``, the images to run) for ``model`` on images shaped like ``xd``
    (forward and backward passes). What a large batch costs depends on what the process allocated
    before, so it is measured rather than fixed."""
    if batch_size is not None:
        return positive_int(batch_size, "batch_size")
    sizes = [b for b in GRADIENT_BATCH_SIZES if b <= jobs]
    if len(sizes) < 2:
        return min(DEFAULT_BATCH_SIZE, max(1, jobs))
    return measured_batch_size(model, xd, sizes, gradient=True, repeats=1)
