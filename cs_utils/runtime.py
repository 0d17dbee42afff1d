"""Device, seeds and the compute budget: explicit state, nothing chosen at import."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Budget", "FAST_ENV", "budget", "get_device", "is_fast", "model_device", "progress_bar",
           "seed_everything"]

FAST_ENV = "CS_UTILS_FAST"


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh ``torch.Generator`` seeded with ``seed``.

    Pass the returned generator to every function that makes random choices
    (``generator=``); seeding the global state as well makes library code that
    ignores generators (e.g. weight initialisation) repeatable too.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global state on purpose
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def progress_bar(iterable=None, *, total: int | None = None, desc: str | None = None, enabled: bool = True,
                 **options):
    """A tqdm progress bar (notebook-aware) over ``iterable`` or for ``total`` steps; with
    ``enabled=False`` it shows nothing but still iterates and accepts ``update``/``close``."""
    from tqdm.auto import tqdm

    options.setdefault("leave", False)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, **options)


def is_fast() -> bool:
    """True when ``CS_UTILS_FAST`` is set to a true value (1, true, yes, on)."""
    value = os.environ.get(FAST_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{FAST_ENV}={value!r} is not understood; use 1 (fast budget) or 0 (full budget)")


@dataclass(frozen=True)
class Budget:
    """Sizes and step counts for the notebooks: one code path, two budgets.

    ``fast`` is the budget used by tests and CI (``CS_UTILS_FAST=1``): small
    images and few steps, so every notebook runs in about a minute on 2 CPU
    cores. The full budget makes lecture-quality figures.
    """

    fast: bool
    image_size: int           # classifier input side (pixels)
    style_size: int           # side of images for texture/style optimisation
    n_images: int             # images for feature-space plots (t-SNE, neighbours)
    steps: int                # steps for gradient-ascent images (class viz, inversion)
    style_steps: int          # optimiser evaluations for texture and style transfer
    dream_octaves: int        # DeepDream octaves
    dream_steps: int          # DeepDream steps per octave
    train_steps: int          # steps for the networks the notebooks train
    batch_size: int           # batch size for batched forward passes

    def choose(self, fast, full):
        """``fast`` in the fast budget, else ``full``: one line per notebook setting.

        >>> budget(fast=True).choose(fast=20, full=300)
        20
        """
        return fast if self.fast else full


_FULL = Budget(fast=False, image_size=224, style_size=256, n_images=2000, steps=256,
               style_steps=200, dream_octaves=4, dream_steps=20, train_steps=2000, batch_size=32)
_FAST = Budget(fast=True, image_size=128, style_size=128, n_images=300, steps=16,
               style_steps=15, dream_octaves=2, dream_steps=4, train_steps=60, batch_size=16)


def budget(fast: bool | None = None) -> Budget:
    """The compute budget: fast if ``fast`` (or, when ``None``, if ``CS_UTILS_FAST`` is set)."""
    if fast is None:
        fast = is_fast()
    return _FAST if fast else _FULL
