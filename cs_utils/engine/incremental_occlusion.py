"""Exact incremental inference (Nakandala et al., SIGMOD 2019): recompute only what a change can reach.

An occluded copy of an image differs from the image only inside the patch. A convolution's
output at a position depends only on the inputs under its kernel, so at every layer only the
outputs whose kernel reaches the changed region can differ from the original image's: the
change's *footprint*, grown by each layer's kernel and divided by its stride, clipped to the
map. Everything outside it is the original's activation, computed once.
:class:`IncrementalNetwork` is a network that runs that way: given reference images, it finds
where each image of a batch differs from its reference, and computes for it only the footprint
of each layer, from its changed values pasted into the cached reference around them.

Batching. Every image of a batch gets, at each layer, a window of the same size (the largest
footprint of any image at that layer), moved inside the map where it would stick out. Windows
of the same size stack into one batch; a window computes a little more than the footprint,
which is still exact. Where the windows cover most of a small map (the late, low-resolution
layers) the whole map is computed instead (:data:`FULL_MAP_FRACTION`), which skips the
bookkeeping.

What it runs: :class:`cs_utils.models.EfficientNetLite`, or an ``nn.Sequential`` of
convolutions (zero or TensorFlow "SAME" padding, any stride and groups), batch norm in eval
mode (folded into the convolution before it), ReLU/ReLU6/Hardtanh, dropout, identity,
:class:`~cs_utils.models.InputScaling`, :class:`~cs_utils.models.MBConv` blocks (residual
additions), then a global average pool and a classifier of ``Flatten``/``Linear``/activations.
The pooled vector of an image is the reference's plus the change inside the last window divided
by the map's area. :func:`why_not_incremental` says why a model cannot run this way (an
unknown module, hooks that would be skipped); :func:`cs_utils.occlusion_map` then runs the model
itself.

The engine's rule (:mod:`cs_utils.engine`): it computes scores of images, the network's job; the
occluded copies, the probabilities, the drops and the map are the occlusion exercise's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .network_ops import Conv, Pointwise, Residual, Unsupported, compile_ops, run_full

__all__ = [
    "FULL_MAP_FRACTION",
    "INCREMENTAL_BATCH_SIZE",
    "IncrementalNetwork",
    "why_not_incremental",
]

#: A layer computes its whole map instead of windows when the window covers at least this
#: share of the map (beyond it, the bookkeeping of windows costs more than it saves).
FULL_MAP_FRACTION = 0.5
#: Images whose windows are computed together (their tensors stay in the CPU caches): the batch size
#: :func:`cs_utils.occlusion_map` gives its loop on the incremental path.
INCREMENTAL_BATCH_SIZE = 64


def why_not_incremental(model: nn.Module) -> str | None:
    """Why :class:`IncrementalNetwork` cannot run ``model`` (the module it does not know, or hooks
    it would skip), or ``None`` when it can; :func:`cs_utils.occlusion_map` then runs the model itself."""
    try:
        compile_ops(model)
    except Unsupported as reason:
        return str(reason)
    return None


# --------------------------------------------------------------------------- where each copy changes

@dataclass
class _Geometry:
    """Per copy and axis (rows, columns): the changed region ``[lo, hi)`` and the computed window
    ``[start, start + size)``; all copies share ``size``. ``n`` is the map's size."""

    n: np.ndarray        # (2,)
    lo: np.ndarray       # (P, 2)
    hi: np.ndarray       # (P, 2)
    start: np.ndarray    # (P, 2)
    size: np.ndarray     # (2,)

    @property
    def full(self) -> bool:
        return bool((self.size == self.n).all())


def _placed(n, lo, hi, fraction) -> _Geometry:
    """Windows of one size that hold every copy's changed region, inside the map; the whole map
    when they would cover ``fraction`` of it."""
    hi = np.maximum(hi, lo + 1)      # an empty change (no output of a strided layer reads it) gets a window
    lo, hi = np.minimum(lo, n - 1), np.minimum(hi, n)
    size = (hi - lo).max(axis=0)
    if np.prod(size) >= fraction * np.prod(n):
        size = n.copy()
    return _Geometry(n, lo, hi, np.minimum(lo, n - size), size)


def _gather_index(src: _Geometry, start, size, before, padded, chunk: int, rows: int) -> torch.Tensor:
    """(P, size[0], size[1]) indices into a table of ``rows`` padded-original pixels (a ``padded`` map
    with ``before`` rows/columns of zeros in front) followed by the copies' windows (``src``, ``chunk``
    copies at a time): each pixel of the window at ``start`` (padded coordinates) from the copy's own
    window where it has one, else from the original."""
    copies = src.start.shape[0]
    r = start[:, 0, None] + np.arange(size[0])            # (P, h) padded coordinates
    c = start[:, 1, None] + np.arange(size[1])
    r_in = r - before[0] - src.start[:, 0, None]            # position inside the copy's window
    c_in = c - before[1] - src.start[:, 1, None]
    inside = ((r_in >= 0) & (r_in < src.size[0]))[:, :, None] & ((c_in >= 0) & (c_in < src.size[1]))[:, None]
    own = (rows + (np.arange(copies) % chunk * int(np.prod(src.size)))[:, None, None]
           + r_in[:, :, None] * src.size[1] + c_in[:, None, :])
    original = r[:, :, None] * padded[1] + c[:, None, :]
    return torch.from_numpy(np.where(inside, own, original).astype(np.int64))


def _plan(ops: list, g: _Geometry, chunk: int, fraction: float) -> tuple[list, _Geometry]:
    """For each operation, how the windows move: its steps, and the geometry after the last one."""
    steps = []
    for op in ops:
        if isinstance(op, Pointwise) or (isinstance(op, Conv) and op.pointwise):
            steps.append(None)
        elif isinstance(op, Conv):
            top, bottom, left, right = op.padding(*g.n)
            before, after = np.array([top, left]), np.array([bottom, right])
            k, s = np.array(op.kernel), np.array(op.stride)
            n_out = (g.n + before + after - k) // s + 1
            out = _placed(n_out, np.maximum(-((k - 1 - before - g.lo) // s), 0),
                          (g.hi - 1 + before) // s + 1, fraction)
            if g.full and out.full:
                steps.append(("full", out))
            else:
                padded = g.n + before + after
                index = _gather_index(g, out.start * s, (out.size - 1) * s + k, before, padded, chunk,
                                      int(np.prod(padded)))
                steps.append(("window", out, index, int(np.prod(padded)), int(np.prod(g.size))))
            g = out
        else:   # a residual block: the sum's windows hold both changed regions
            body, y = _plan(op.body, g, chunk, fraction)
            out = _placed(g.n, np.minimum(g.lo, y.lo), np.maximum(g.hi, y.hi), fraction)
            zero, rows = np.zeros(2, dtype=np.int64), int(np.prod(g.n))
            onto = [None if _same_windows(src, out) else
                    _gather_index(src, out.start, out.size, zero, g.n, chunk, rows) for src in (g, y)]
            steps.append(("residual", body, onto, rows, (int(np.prod(g.size)), int(np.prod(y.size)))))
            g = out
    return steps, g


def _same_windows(a: _Geometry, b: _Geometry) -> bool:
    """Whether every copy's window is the same in ``a`` and ``b`` (nothing to move)."""
    return (a.full and b.full) or (bool((a.size == b.size).all()) and bool((a.start == b.start).all()))


_plans: OrderedDict = OrderedDict()   # (structure, image size, corners, ...) -> (steps, last geometry)
KEPT_PLANS = 48   # one per batch: a 224 px map at window 16, stride 8 has 12 batches of 64 copies


def _cached_plan(ops, height, width, corners, patch, chunk, fraction):
    key = (tuple(op.signature() for op in ops), height, width, tuple(corners), patch, chunk, fraction)
    if key not in _plans:
        lo = np.array(corners, dtype=np.int64).reshape(-1, 2)
        size = np.array(patch, dtype=np.int64)
        first = _Geometry(np.array([height, width]), lo, lo + size, lo, size)
        _plans[key] = _plan(ops, first, chunk, fraction)
        while len(_plans) > KEPT_PLANS:
            _plans.popitem(last=False)
    _plans.move_to_end(key)
    return _plans[key]


# --------------------------------------------------------------------------- running the copies

def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _Table:
    """The original activation (padded), flattened to pixels x channels, with room behind it for a
    batch of copies' windows (grown when a batch needs more); :meth:`assemble` builds input windows
    from both."""

    def __init__(self, original: torch.Tensor, pads):
        top, bottom, left, right = pads
        padded = F.pad(original, (left, right, top, bottom)) if any(pads) else original
        self.rows = padded.shape[-2] * padded.shape[-1]
        self.data = padded[0].permute(1, 2, 0).reshape(self.rows, original.shape[1])   # no room yet

    def assemble(self, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        channels = values.shape[1]
        flat = values.permute(0, 2, 3, 1).reshape(-1, channels)
        end = self.rows + flat.shape[0]
        if self.data.shape[0] < end:     # room for this batch (the original copied once, mostly)
            data = self.data.new_empty(end, channels)
            data[:self.rows] = self.data[:self.rows]
            self.data = data
        self.data[self.rows:end] = flat
        out = self.data.index_select(0, index.reshape(-1))
        return out.view(*index.shape, channels).permute(0, 3, 1, 2)


def _original_pass(ops, x, tables: dict) -> torch.Tensor:
    """``x`` through ``ops`` on whole maps, keeping a table of every activation a window can read:
    the input of each spatial convolution, both terms of each residual addition."""
    for op in ops:
        if isinstance(op, Residual):
            y = _original_pass(op.body, x, tables)
            tables[(id(op), 0)], tables[(id(op), 1)] = _Table(x, (0, 0, 0, 0)), _Table(y, (0, 0, 0, 0))
            x = y + x
        else:
            if isinstance(op, Conv) and not op.pointwise:
                tables[id(op)] = _Table(x, op.padding(*x.shape[-2:]))
            x = op.full(x)
    return x


def _window_pass(ops, steps, values, tables: dict) -> torch.Tensor:
    """The copies' windows through ``ops``."""
    for op, step in zip(ops, steps):
        if step is None or step[0] == "full":
            values = op.full(values)
        elif step[0] == "window":
            values = op.window(tables[id(op)].assemble(values, step[2]))
        else:
            y = _window_pass(op.body, step[1], values, tables)
            x_on, y_on = (v if index is None else tables[(id(op), which)].assemble(v, index)
                          for which, (v, index) in enumerate(zip((values, y), step[2])))
            values = _channels_last(y_on) + x_on
    return values


def _classify(head: list, pooled: torch.Tensor) -> torch.Tensor:
    for layer in head:
        pooled = F.linear(pooled, layer[1], layer[2]) if layer[0] == "linear" else pooled.clamp(*layer[1])
    return pooled


def _on_device(steps, device):
    if device.type == "cpu":
        return steps
    moved = []
    for step in steps:
        if step is None or step[0] == "full":
            moved.append(step)
        elif step[0] == "window":
            moved.append((step[0], step[1], step[2].to(device), *step[3:]))
        else:
            moved.append((step[0], _on_device(step[1], device),
                          [None if index is None else index.to(device) for index in step[2]], *step[3:]))
    return moved


# --------------------------------------------------------------------------- the network

@dataclass(eq=False)
class _Original:
    """A reference's pass: tables, the last map's summed-area table (C, h + 1, w + 1), pooled, scores."""

    tables: dict
    area: torch.Tensor
    pooled: torch.Tensor
    scores: torch.Tensor


class IncrementalNetwork(nn.Module):
    """``model``'s scores for images that differ from one of ``references`` only in a small region.

    ``model(images)`` computed as Nakandala et al. do: each image in a batch is compared with the
    reference images (pixel for pixel); where it differs from its reference inside a box of at
    most ``largest`` of the image, every layer computes only the outputs that box can reach, the
    rest taken from one cached pass of the reference. Images equal to a reference get its cached
    scores; any other image (larger changes, another shape, dtype or device, or a graph asked
    for) takes a whole pass. The result equals ``model(images)`` in eval mode (batch norm with its
    running statistics, no dropout) up to float rounding, without a graph. ``fraction``: see
    :data:`FULL_MAP_FRACTION` (0: whole maps at every layer; above 1: windows at every layer).

    A network, nothing more: it knows nothing of patches, probabilities or maps. What the images
    are and what is done with the scores is the caller's; :func:`cs_utils.occlusion_map` gives it
    to the occlusion loop in place of the model. ``model`` is a submodule (its parameters, device
    and train/eval mode are this network's); its weights are read once, here. Raises
    ``ValueError`` for a model :func:`why_not_incremental` rejects.
    """

    def __init__(self, model: nn.Module, references: torch.Tensor, *, fraction: float = FULL_MAP_FRACTION,
                 largest: float = 0.25):
        super().__init__()
        try:
            self._ops, self._head = compile_ops(model)
        except Unsupported as reason:
            raise ValueError(f"incremental occlusion cannot run this model: {reason}; use the plain path "
                             f"(cs_utils.occlusion_map(..., incremental=False))") from None
        if not isinstance(references, torch.Tensor) or references.dim() != 4 or references.shape[0] == 0:
            raise ValueError(f"references must be a batch of images (N, C, H, W), got "
                             f"{getattr(references, 'shape', references)!r}")
        if not fraction >= 0 or not 0 <= largest <= 1:
            raise ValueError(f"fraction must be >= 0 and largest in [0, 1], got {fraction!r} and {largest!r}")
        self.model, self.fraction, self.largest = model, float(fraction), float(largest)
        self._references = references.detach().clone()
        self._originals: OrderedDict = OrderedDict()   # reference index -> _Original, the last two

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        refs = self._references
        if not isinstance(images, torch.Tensor) or images.shape[1:] != refs.shape[1:] \
                or (images.dtype, images.device) != (refs.dtype, refs.device) \
                or (images.requires_grad and torch.is_grad_enabled()):
            return self.model(images)
        with torch.no_grad():
            return self._scores(images)

    def _original(self, r: int) -> _Original:
        if r not in self._originals:
            tables = {}
            final = _original_pass(self._ops, _channels_last(self._references[r:r + 1]), tables)
            pooled = final.mean(dim=(2, 3))
            area = F.pad(final[0].double().cumsum(1).cumsum(2), (1, 0, 1, 0))
            self._originals[r] = _Original(tables, area, pooled, _classify(self._head, pooled))
            while len(self._originals) > 2:     # the occlusion loop takes the images in order
                self._originals.popitem(last=False)
        self._originals.move_to_end(r)
        return self._originals[r]

    def _scores(self, images: torch.Tensor) -> torch.Tensor:
        refs, size = self._references, images.shape[-2:]
        if refs.shape[0] == 1:
            which = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        else:   # the reference each image differs least from, at every 4th pixel; then exactly
            which = (images[:, None, :, ::4, ::4] != refs[None, :, :, ::4, ::4]).flatten(2).sum(2).argmin(1)
        changed = (images != (refs if refs.shape[0] == 1 else refs[which])).any(dim=1)   # (count, H, W)
        rows, cols = changed.any(dim=2).int(), changed.any(dim=1).int()
        lo = torch.stack([rows.argmax(dim=1), cols.argmax(dim=1)], dim=1).cpu().numpy()
        last = torch.stack([rows.flip(1).argmax(dim=1), cols.flip(1).argmax(dim=1)], dim=1).cpu().numpy()
        hi = np.array(size) - last                                          # the changed box: [lo, hi)
        same = rows.sum(dim=1) == 0
        small = ~same & torch.from_numpy((hi - lo).prod(axis=1) <= self.largest * size.numel()).to(same)
        done = []   # (which images, their scores)
        for r in which[same | small].unique().tolist():
            original, mine = self._original(r), which == r
            done.append(((mine & same).nonzero()[:, 0], original.scores.expand(int((mine & same).sum()), -1)))
            part = (mine & small).nonzero()[:, 0]
            if len(part):
                index = part.cpu().numpy()
                done.append((part, self._changed(images, part, lo[index], hi[index], original)))
        whole = (~same & ~small).nonzero()[:, 0]
        if len(whole):
            final = run_full(self._ops, _channels_last(images[whole]))
            done.append((whole, _classify(self._head, final.mean(dim=(2, 3)))))
        scores = torch.cat([s for _, s in done])
        out = scores.new_empty(images.shape[0], scores.shape[1])
        out[torch.cat([i for i, _ in done])] = scores
        return out

    def _changed(self, images, part, lo, hi, original: _Original) -> torch.Tensor:
        """The scores of ``images[part]``, each changed inside ``[lo, hi)`` (rows, columns) only."""
        height, width = images.shape[-2:]
        patch = tuple(int(v) for v in (hi - lo).max(axis=0))
        corners = [tuple(int(v) for v in c) for c in np.minimum(lo, np.array([height, width]) - patch)]
        steps, last = _cached_plan(self._ops, height, width, corners, patch, len(corners), self.fraction)
        steps = _on_device(steps, images.device)
        windows = torch.stack([images[i, :, t:t + patch[0], c:c + patch[1]]
                               for i, (t, c) in zip(part.tolist(), corners)])
        values = _window_pass(self._ops, steps, _channels_last(windows), original.tables)
        if last.full:
            pooled = values.mean(dim=(2, 3))
        else:
            start = torch.from_numpy(last.start).to(images.device)
            (r0, c0), (r1, c1) = start.T, (start + torch.from_numpy(last.size).to(images.device)).T
            area = original.area
            before = (area[:, r1, c1] - area[:, r0, c1] - area[:, r1, c0] + area[:, r0, c0]).T
            change = (values.sum(dim=(2, 3)).double() - before) / int(last.n.prod())
            pooled = original.pooled + change.to(images.dtype)
        return _classify(self._head, pooled)
