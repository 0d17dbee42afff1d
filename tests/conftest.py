"""Shared fixtures: the pretrained default model, tiny models, hook counting."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import cs_utils  # noqa: E402


@pytest.fixture(scope="session")
def lite0():
    return cs_utils.load_model("efficientnet_lite0")


@pytest.fixture
def tiny_cnn():
    """A small deterministic CNN with named layers: conv -> relu -> pool -> fc."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(4, 5))
    return model.eval()


def count_hooks(model: nn.Module) -> int:
    """Every forward, forward-pre and backward hook registered on any submodule."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total


@pytest.fixture
def hook_count():
    return count_hooks
