"""A small CNN for small greyscale images, its training, and its filters drawn as images.

:class:`SmallCNN` (wide first-layer kernels) is trained with :func:`train_classifier`
(Adam, cross-entropy, a :class:`TrainingHistory` of loss and accuracy) and scored with
:func:`classifier_accuracy`, so its first-layer filters can be compared before and
after training: :func:`filter_images` rescales each filter to [0, 1] for display and
:func:`filter_smoothness` measures how smooth each filter is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .history import History
from .hooks import evaluating
from .runtime import model_device, progress_bar
from .validation import positive_int

__all__ = [
    "SmallCNN",
    "TrainingHistory",
    "classifier_accuracy",
    "filter_images",
    "filter_smoothness",
    "train_classifier",
]


class SmallCNN(nn.Module):
    """A small classifier for 28x28-ish images whose first layer has wide kernels.

    Takes images in [0, 1] and maps them to [-1, 1] first (centred inputs keep
    filters from dying: with all-positive inputs, a filter that turns negative
    never fires again). ``conv1`` (``kernel_size`` x ``kernel_size``, ``width`` filters) -> ReLU -> 2x2
    max pool -> ``conv2`` (3x3, 2 * ``width``) -> ReLU -> 4x4 average pool -> ``fc``
    (the pooled map stays 4x4 so ``fc`` still knows where things are).
    ``init_scale`` multiplies conv1's default initial weights and biases: a small
    start means the filters after training show what training put there.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, *, kernel_size: int = 7,
                 width: int = 16, init_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(1))
        self.fc = nn.Linear(2 * width * 16, num_classes)
        with torch.no_grad():
            self.conv1.weight.mul_(init_scale)
            self.conv1.bias.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(2 * x - 1)))
        return self.fc(self.pool(self.relu2(self.conv2(x))))


@dataclass
class TrainingHistory(History):
    """Per-step training ``loss`` and batch ``accuracy`` (drawn on a second axis), and the wall time."""

    accuracy: list[float] = field(default_factory=list)

    twin_series = ("accuracy",)

    def __post_init__(self):
        self.steps = self.steps or len(self.loss)


def _check_labelled(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError("labels must be an int64 tensor (N,) of class indices")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no images to train on")


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
                     generator: torch.Generator | None = None, progress: bool = True,
                     desc: str = "training") -> TrainingHistory:
    """Train ``model`` (in place: training is the point) with Adam and cross-entropy.

    Each step draws a random batch of ``batch_size`` images with ``generator``
    (epochs of shuffled indices). Only parameters with ``requires_grad`` are
    trained. The model is in train mode during training and gets back each
    module's previous mode after; ``images`` and ``labels`` are not changed.
    Returns a :class:`TrainingHistory` (loss and batch accuracy per step).
    """
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    _check_labelled(images, labels)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True to train")
    device = params[0].device
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    modes = [(m, m.training) for m in model.modules()]
    history = TrainingHistory()
    start = time.perf_counter()
    order = torch.empty(0, dtype=torch.long)
    try:
        model.train()
        for _ in progress_bar(range(steps), total=steps, desc=desc, enabled=progress):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
            batch, order = order[:batch_size], order[batch_size:]
            x = images[batch].to(device)
            y = labels[batch].to(device)
            scores = model(x)
            if scores.dim() != 2 or int(labels.max()) >= scores.shape[1] or int(labels.min()) < 0:
                raise ValueError(f"labels must be class indices in [0, {scores.shape[-1] - 1}] for a model "
                                 f"with output shape {tuple(scores.shape)}; got labels in "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
            loss = F.cross_entropy(scores, y)
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            for p in params:
                p.grad = None
            history.loss.append(loss.item())
            history.accuracy.append((scores.argmax(1) == y).float().mean().item())
            history.steps += 1
    finally:
        for module, training in modes:
            module.train(training)
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        batch_size: int = 256) -> float:
    """The fraction of ``images`` that ``model`` (in eval mode, restored after) classifies right."""
    _check_labelled(images, labels)
    batch_size = positive_int(batch_size, "batch_size")
    device = model_device(model)
    correct = 0
    with evaluating(model):
        for i in range(0, len(labels), batch_size):
            scores = model(images[i:i + batch_size].to(device))
            correct += (scores.argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum().item()
    return correct / len(labels)


def filter_images(weight) -> torch.Tensor:
    """Convolution filters as images: each filter rescaled on its own to [0, 1].

    ``weight``: a conv layer or its weight (C_out, C_in, kH, kW). Each filter's
    smallest value becomes 0 and its largest 1 (x 255 for 8-bit pixels); a
    constant filter becomes mid-grey. Returns a new detached (C_out, C_in, kH, kW)
    float tensor; with C_in = 3 each filter is an RGB image.
    """
    if isinstance(weight, nn.Module):
        if not isinstance(getattr(weight, "weight", None), torch.Tensor):
            raise TypeError(f"{type(weight).__name__} has no weight tensor; pass a conv layer or a weight")
        weight = weight.weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"expected conv filters of shape (C_out, C_in, kH, kW), got {shape}")
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - lo
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.full_like(flat, 0.5))
    return scaled.reshape(w.shape).clone()


def filter_smoothness(weight) -> torch.Tensor:
    """How smooth each filter is: the correlation between horizontally and vertically
    neighbouring weights (after removing each filter's mean), one value per filter.

    About 0 for random (white-noise) filters, near 1 for smooth edges and blobs;
    negative for checkerboards. ``weight``: a conv layer or (C_out, C_in, kH, kW).
    """
    w = filter_images(weight) * 2 - 1  # the same tensor, any scale: correlation ignores it
    w = w - w.mean((1, 2, 3), keepdim=True)
    pairs = (w[..., 1:, :] * w[..., :-1, :]).sum((1, 2, 3)) + (w[..., :, 1:] * w[..., :, :-1]).sum((1, 2, 3))
    energy = ((w[..., 1:, :] ** 2 + w[..., :-1, :] ** 2).sum((1, 2, 3))
              + (w[..., :, 1:] ** 2 + w[..., :, :-1] ** 2).sum((1, 2, 3))) / 2
    return torch.where(energy > 0, pairs / energy.clamp_min(1e-12), torch.zeros_like(energy))
