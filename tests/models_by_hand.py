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
