import random

import numpy as np
import pytest
import torch

import cs_utils
from cs_utils import runtime


def test_seed_everything_returns_seeded_generator():
    g1 = cs_utils.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g1))  # noqa: NPY002
    g2 = cs_utils.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g2))  # noqa: NPY002
    assert isinstance(g1, torch.Generator)
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert not torch.equal(torch.rand(3, generator=cs_utils.seed_everything(1)),
                           torch.rand(3, generator=cs_utils.seed_everything(2)))


@pytest.mark.parametrize("bad,error", [(1.5, TypeError), ("1", TypeError), (-1, ValueError)])
def test_seed_everything_rejects_bad_seeds(bad, error):
    with pytest.raises(error):
        cs_utils.seed_everything(bad)


def test_budget_follows_environment(monkeypatch):
    monkeypatch.setenv("CS_UTILS_FAST", "1")
    fast = cs_utils.budget()
    monkeypatch.setenv("CS_UTILS_FAST", "0")
    full = cs_utils.budget()
    monkeypatch.delenv("CS_UTILS_FAST")
    assert cs_utils.budget() == full
    assert fast.fast and not full.fast
    assert fast.image_size < full.image_size and fast.steps < full.steps
    assert cs_utils.budget(fast=True) == fast
    monkeypatch.setenv("CS_UTILS_FAST", "maybe")
    with pytest.raises(ValueError, match="CS_UTILS_FAST"):
        cs_utils.budget()


def test_test_run_uses_fast_budget():
    # `make test` and CI set CS_UTILS_FAST=1; a plain `pytest` run gets the full budget.
    import os

    assert cs_utils.runtime.is_fast() == (os.environ.get("CS_UTILS_FAST") == "1")


def test_get_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cs_utils.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cs_utils.get_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cs_utils.get_device() == torch.device("cpu")


def test_import_does_no_work():
    import subprocess
    import sys

    # No seeding, and matplotlib is not even imported (so no settings can change).
    code = ("import random, sys, torch; s = torch.random.get_rng_state(); r = random.getstate(); "
            "import cs_utils; "
            "assert torch.equal(s, torch.random.get_rng_state()) and r == random.getstate(); "
            "assert 'matplotlib' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
    assert runtime.FAST_ENV == "CS_UTILS_FAST"


def test_model_device_reads_parameters_then_buffers():
    import torch
    from torch import nn

    from cs_utils.runtime import model_device

    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.BatchNorm2d(3).requires_grad_(False)) == torch.device("cpu")
    bare = nn.Module()
    bare.register_buffer("scale", torch.ones(1, dtype=torch.float64))
    assert model_device(bare) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")
