"""Batch sizes chosen by measurement: the fastest per item, measured once per network and kept.

What a batch costs on a CPU depends on the machine, the thread count and what the process
allocated before (small batches are often the fastest per image on a CPU; the numbers are in
``benchmarks/README.md``), so the techniques that run many images through a
network (occlusion's plain path, integrated gradients, SmoothGrad) measure instead of guessing:
:func:`fastest_batch_size` times a few batch sizes, :func:`measured_batch_size` does that once
per network, device, dtype, image shape and thread count in the process and keeps the answer
with the network (it goes when the network goes).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..hooks import evaluating

__all__ = ["fastest_batch_size", "measured_batch_size"]


def fastest_batch_size(run: Callable[[int], object], sizes: Iterable[int] = (1, 2, 4, 8, 16, 32), *,
                       repeats: int = 2, stop_when_slower: float | None = 1.25,
                       clock: Callable[[], float] = time.perf_counter) -> int:
    """The batch size in ``sizes`` with the least time per item of ``run(batch_size)``.

    ``run(b)`` does the work for one batch of ``b`` items (e.g. one forward pass of
    ``b`` images). It is called once untimed at the smallest size (warm-up), then
    ``repeats`` times per size in ascending order; each size's best time divided by
    its size is compared, ties going to the smaller batch. Once a size takes more
    than ``stop_when_slower`` times the best time per item so far, the larger sizes
    are not tried (per-item time falls, then rises: on a CPU the large batches,
    which cost the most to measure, are rarely the fastest); ``None`` tries them all.
    ``clock``: the timer (seconds), :func:`time.perf_counter` by default.
    """
    sizes = sorted({int(b) for b in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    run(sizes[0])  # warm-up: first-call allocations and lazy initialisation
    per_item = {}
    for b in sizes:
        best = float("inf")
        for _ in range(repeats):
            start = clock()
            run(b)
            best = min(best, clock() - start)
        per_item[b] = best / b
        if stop_when_slower is not None and per_item[b] > stop_when_slower * min(per_item.values()):
            break
    return min(per_item, key=lambda b: (per_item[b], b))


# network -> {(passes, device, dtype, image shape, torch threads, sizes): batch size}; the entries go with
# the network
_measured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# (architecture, the key above) -> batch size: what a network's copy with other weights finds (the
# randomized copies of a sanity check, a folded copy made again after a weight changed)
_by_architecture: dict[tuple, int] = {}
_ARCHITECTURES_KEPT = 256


def _architecture(model: nn.Module) -> tuple:
    """What the time of a pass depends on but the weights' values do not: every module's type and
    settings, every parameter's and buffer's shape, dtype and memory layout."""
    modules = tuple((name, type(m).__module__, type(m).__qualname__, m.extra_repr())
                    for name, m in model.named_modules())
    tensors = tuple((name, tuple(t.shape), t.dtype, t.device.type, t.is_contiguous())
                    for name, t in (*model.named_parameters(), *model.named_buffers()))
    return modules, tensors


def measured_batch_size(model: nn.Module, images: torch.Tensor, sizes: Iterable[int], *,
                        gradient: bool = False, repeats: int = 2) -> int:
    """The batch size in ``sizes`` with the least time per image for ``model`` on images shaped like
    ``images[0]`` (on their device, in their dtype): plain forward passes without a graph, or with
    ``gradient=True`` a forward and a backward pass to the images. Measured once
    (:func:`fastest_batch_size`, ``repeats`` times per size) per model, device, dtype, image
    shape, torch thread count and ``sizes`` in this process, in eval mode, then kept with the model;
    a network of the same architecture with other weights (a randomized or folded copy) finds it too.
    """
    sizes = tuple(sorted({int(b) for b in sizes}))
    key = ("gradient" if gradient else "forward", images.device, images.dtype, tuple(images.shape[1:]),
           torch.get_num_threads(), sizes)
    try:
        kept = _measured.setdefault(model, {})
    except TypeError:          # no weak reference to it: measure, keep nothing
        kept = {}
    same = (_architecture(model), key)
    if key not in kept and same in _by_architecture:
        kept[key] = _by_architecture[same]
    if key not in kept:
        batch = images[:1].detach().expand(sizes[-1], *images.shape[1:]).contiguous()
        if gradient:
            def passes(b):
                part = batch[:b].clone().requires_grad_(True)
                torch.autograd.grad(model(part).float().sum(), [part])

            with evaluating(model), torch.enable_grad():
                kept[key] = fastest_batch_size(passes, sizes, repeats=repeats)
        else:
            with evaluating(model), torch.inference_mode():
                kept[key] = fastest_batch_size(lambda b: model(batch[:b]), sizes, repeats=repeats)
        if len(_by_architecture) >= _ARCHITECTURES_KEPT:
            _by_architecture.pop(next(iter(_by_architecture)))
        _by_architecture[same] = kept[key]
    return kept[key]
