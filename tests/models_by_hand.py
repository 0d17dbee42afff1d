"""Tiny models whose answers can be worked out by hand, shared by the test files."""

import torch
from torch import nn


def linear_model(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    """Flatten -> Linear: ``scores = weight @ x.flatten() + bias`` (bias 0 if None), in eval mode."""
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    return nn.Sequential(nn.Flatten(), fc).eval()


def red_square_model() -> nn.Module:
    """Two classes on 4x4 images: score 0 = sum of the red channel, score 1 = 0."""
    weight = torch.zeros(2, 3, 4, 4)
    weight[0, 0] = 1.0
    return linear_model(weight.view(2, -1))


def red_square_image() -> torch.Tensor:
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2, :2] = 1.0          # a red 2x2 square top left; mean colour (0.25, 0, 0)
    return x


def unusable_image(bad: str) -> torch.Tensor:
    """A (1, 3, 8, 8) grey image made unusable: "nan", "inf", "empty", "meta" or "range" (0..255)."""
    x = torch.full((1, 3, 8, 8), 0.5)
    if bad == "nan":
        x[0, 0, 3, 3] = float("nan")
    elif bad == "inf":
        x[0, 2, 0, 7] = float("inf")
    elif bad == "empty":
        x = x[:0]
    elif bad == "range":
        x = x * 255
    elif bad == "meta":
        x = torch.empty(1, 3, 8, 8, device="meta")
    else:
        raise ValueError(f"unknown kind of unusable image {bad!r}")
    return x
