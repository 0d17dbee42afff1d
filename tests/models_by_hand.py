"""Tiny models whose answers can be worked out by hand, shared by the test files."""

import contextlib

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


class FailsOnCall(nn.Module):
    """Identity that raises on its ``n``-th forward pass: an error in the middle of a technique."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("failure in the middle of the optimisation")
        return x


def batch_norm_cnn(classes: int = 5, fails_on_call: int | None = None) -> nn.Module:
    """conv -> bn -> relu (``block1``), conv -> bn -> relu (``block2``), pool, ``fc``: every batch norm
    foldable, with running statistics and affine parameters far from 0 and 1, as after training;
    returned in training mode with ``block1``'s bias frozen (the caller's state a technique must
    keep). ``fails_on_call=n``: a :class:`FailsOnCall` after ``block1`` (``fails``)."""
    torch.manual_seed(3)
    model = nn.Sequential()
    model.add_module("block1", nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()))
    if fails_on_call is not None:
        model.add_module("fails", FailsOnCall(fails_on_call))
    model.add_module("block2", nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
                                             nn.BatchNorm2d(8), nn.ReLU()))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(8, classes))
    for bn in (model.block1[1], model.block2[1]):
        c = bn.num_features
        bn.running_mean.copy_(torch.linspace(-0.5, 1.0, c))
        bn.running_var.copy_(torch.linspace(0.3, 2.5, c))
        bn.weight.data.copy_(torch.linspace(0.6, 1.8, c))
        bn.bias.data.copy_(torch.linspace(-0.2, 0.5, c))
    model.block1[0].bias.requires_grad_(False)
    return model.train()


@contextlib.contextmanager
def unfolded(model: nn.Module):
    """A no-op forward hook on ``model`` inside the block: there the techniques run the model as
    it is (the engine never copies a hooked model: the copy would call copies of its hooks)."""
    handle = model.register_forward_hook(lambda *args: None)
    try:
        yield model
    finally:
        handle.remove()
