"""Exact incremental occlusion (Nakandala et al., SIGMOD 2019): recompute only what a patch can change.

An occluded copy of an image differs from the image only inside the patch. A convolution's
output at a position depends only on the inputs under its kernel, so at every layer only the
outputs whose kernel reaches the changed region can differ from the original image's: the
patch's *footprint*, grown by each layer's kernel and divided by its stride, clipped to the
map. Everything outside it is the original's activation, computed once.
:func:`incremental_occluded_probabilities` runs the model that way: one forward pass of the
image, cached, then for every occluded copy only the footprint of each layer, computed from
the copy's changed values pasted into the cached original around them.

Batching. Every copy gets, at each layer, a window of the same size (the largest footprint of
any copy at that layer), moved inside the map where it would stick out. Windows of the same
size stack into one batch; a window computes a little more than the footprint, which is still
exact. Where the windows cover most of a small map (the late, low-resolution layers) the
whole map is computed instead (:data:`FULL_MAP_FRACTION`), which skips the bookkeeping.

What it runs: :class:`cs_utils.models.EfficientNetLite`, or an ``nn.Sequential`` of
convolutions (zero or TensorFlow "SAME" padding, any stride and groups), batch norm in eval
mode (folded into the convolution before it), ReLU/ReLU6/Hardtanh, dropout, identity,
:class:`~cs_utils.models.InputScaling`, :class:`~cs_utils.models.MBConv` blocks (residual
additions), then a global average pool and a classifier of ``Flatten``/``Linear``/activations.
The pooled vector of a copy is the original's plus the change inside the last window divided
by the map's area. :func:`why_not_incremental` says why a model cannot run this way (an
unknown module, hooks that would be skipped); :func:`cs_utils.occlusion_map` then takes the
plain path, one full forward pass per copy.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module_hooks

from .checks import int_pair, positive_int
from .folding import bn_scale_shift
from .models import Conv2dSame, EfficientNetLite, InputScaling, MBConv

__all__ = [
    "FULL_MAP_FRACTION",
    "INCREMENTAL_BATCH_SIZE",
    "incremental_occluded_probabilities",
    "why_not_incremental",
]

#: A layer computes its whole map instead of windows when the window covers at least this
#: share of the map (on 2 CPU threads the bookkeeping of windows costs about that much).
FULL_MAP_FRACTION = 0.5
#: Occluded copies whose windows are computed together (their tensors stay in the CPU caches).
INCREMENTAL_BATCH_SIZE = 64


class _Unsupported(Exception):
    """The model has something the incremental path does not know; the message says what."""


# --------------------------------------------------------------------------- the model as operations

@dataclass(eq=False)
class _Pointwise:
    """``clamp(x * scale + shift)`` per channel (input scaling, batch norm alone, an activation)."""

    scale: torch.Tensor | None
    shift: torch.Tensor | None
    clamp: tuple | None

    def full(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = torch.addcmul(self.shift.view(1, -1, 1, 1), x, self.scale.view(1, -1, 1, 1))
        return _clamp(x, self.clamp, inplace=self.scale is not None)

    def signature(self):
        return ("pointwise",)


@dataclass(eq=False)
class _Conv:
    """A convolution with the batch norm after it folded in, and its activation."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int]
    groups: int
    same: bool                  # TensorFlow "SAME" padding, which depends on the input size
    pads: tuple[int, int, int, int]   # (top, bottom, left, right) when not ``same``
    clamp: tuple | None

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[-2:])

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding for an input of ``height`` x ``width``."""
        if not self.same:
            return self.pads
        sides = []
        for size, k, s in zip((height, width), self.kernel, self.stride):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            sides += [total // 2, total - total // 2]
        return tuple(sides)

    @property
    def pointwise(self) -> bool:
        return self.kernel == (1, 1) and self.stride == (1, 1) and not self.same and self.pads == (0,) * 4

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of an already padded input (no padding added)."""
        return _clamp(F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups), self.clamp)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.padding(*x.shape[-2:])
        if top == bottom and left == right:
            out = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        else:
            out = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride, 0, 1,
                           self.groups)
        return _clamp(out, self.clamp)

    def signature(self):
        return ("conv", self.kernel, self.stride, self.same, self.pads)


@dataclass(eq=False)
class _Residual:
    """``body(x) + x``."""

    body: list

    def full(self, x: torch.Tensor) -> torch.Tensor:
        return _run_full(self.body, x) + x

    def signature(self):
        return ("residual", tuple(op.signature() for op in self.body))


def _clamp(x: torch.Tensor, bounds, inplace: bool = True) -> torch.Tensor:
    if bounds is None:
        return x
    return x.clamp_(*bounds) if inplace else x.clamp(*bounds)


def _run_full(ops: list, x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.full(x)
    return x


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout2d)


def _activation(module: nn.Module) -> tuple:
    if type(module) is nn.ReLU:
        return (0.0, None)
    return (float(module.min_val), float(module.max_val))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, clamp) -> _Conv:
    """``conv`` then ``bn`` (eval mode) as one convolution: the same function, folded in float64."""
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise _Unsupported("a convolution with dilation or non-zero padding mode")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if bn is not None:
        scale, shift = bn_scale_shift(bn)
        weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale + shift
    same, pads = type(conv) is Conv2dSame, (0, 0, 0, 0)
    if not same:
        if conv.padding == "same":
            pads = tuple(p for k in conv.kernel_size for p in ((k - 1) // 2, k - 1 - (k - 1) // 2))
        elif conv.padding != "valid":
            pads = (conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1])
    dtype = conv.weight.dtype
    return _Conv(weight.to(dtype).contiguous(), bias.to(dtype), tuple(conv.stride), conv.groups, same, pads,
                 clamp)


def _check_bn(name: str, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise _Unsupported(f"{name} (a BatchNorm2d without running statistics normalises by the batch)")


def _flatten(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    if type(module) is nn.Sequential:
        return [item for child, sub in module.named_children()
                for item in _flatten(f"{name}.{child}" if name else child, sub)]
    return [(name, module)]


def _compile_spatial(items: list[tuple[str, nn.Module]]) -> tuple[list, int]:
    """The operations up to the global average pool, and the index of the pool in ``items``."""
    ops, i = [], 0
    while i < len(items):
        name, module = items[i]
        kind = type(module)
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if kind in (nn.Conv2d, Conv2dSame):
            bn = None
            if type(nxt) is nn.BatchNorm2d:
                _check_bn(items[i + 1][0], nxt)
                bn, i = nxt, i + 1
                nxt = items[i + 1][1] if i + 1 < len(items) else None
            clamp = None
            if type(nxt) in _ACTIVATIONS:
                clamp, i = _activation(nxt), i + 1
            ops.append(_fold(module, bn, clamp))
        elif kind is nn.BatchNorm2d:
            _check_bn(name, module)
            scale, shift = bn_scale_shift(module)
            dtype = module.running_mean.dtype
            ops.append(_Pointwise(scale.to(dtype), shift.to(dtype), None))
        elif kind is InputScaling:
            scale = 1 / module.std.flatten()
            ops.append(_Pointwise(scale, -module.mean.flatten() * scale, None))
        elif kind in _ACTIVATIONS:
            ops.append(_Pointwise(None, None, _activation(module)))
        elif kind is MBConv:
            parts = [module.expand] if module.expand is not None else []
            body, end = _compile_spatial([item for part, label in zip(
                parts + [module.depthwise, module.project],
                (["expand"] if parts else []) + ["depthwise", "project"])
                for item in _flatten(f"{name}.{label}", part)])
            if end != -1:
                raise _Unsupported(f"{name} (a pool inside a block)")
            ops += [_Residual(body)] if module.has_skip else body
        elif kind is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
            return ops, i
        elif kind not in _SKIPPED:
            raise _Unsupported(f"{name} ({kind.__name__})")
        i += 1
    return ops, -1


def _compile_head(items: list[tuple[str, nn.Module]]) -> list:
    """The classifier after the pool: ("linear", weight, bias), ("clamp", bounds)."""
    head = []
    for name, module in items:
        kind = type(module)
        if kind is nn.Linear:
            bias = None if module.bias is None else module.bias.detach()
            head.append(("linear", module.weight.detach(), bias))
        elif kind in _ACTIVATIONS:
            head.append(("clamp", _activation(module)))
        elif kind is nn.Flatten:
            if module.start_dim != 1 or module.end_dim != -1:
                raise _Unsupported(f"{name} (a Flatten other than Flatten(1))")
        elif kind not in _SKIPPED:
            raise _Unsupported(f"{name} ({kind.__name__} after the global pool)")
    return head


def _compile(model: nn.Module) -> tuple[list, list]:
    """(operations up to the pool, classifier) of ``model``; raises :class:`_Unsupported`."""
    if _module_hooks._has_any_global_hook():
        raise _Unsupported("global module hooks are registered, and the incremental path would not call them")
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            raise _Unsupported(f"{name or 'the model'} has forward hooks, which the incremental path would "
                               "not call")
        if "forward" in vars(module):
            raise _Unsupported(f"{name or 'the model'} has its own forward function")
    if type(model) is EfficientNetLite:
        items = [item for label in ("input_scaling", "stem", "blocks", "head", "pool", "dropout", "fc")
                 for item in _flatten(label, getattr(model, label))]
    elif type(model) is nn.Sequential:
        items = _flatten("", model)
    else:
        raise _Unsupported(f"the model is a {type(model).__name__}; it knows EfficientNetLite and "
                           "nn.Sequential")
    ops, pool = _compile_spatial(items)
    if pool == -1:
        raise _Unsupported("the model has no global average pool (AdaptiveAvgPool2d(1)) before its "
                           "classifier")
    return ops, _compile_head(items[pool + 1:])


def why_not_incremental(model: nn.Module) -> str | None:
    """Why :func:`incremental_occluded_probabilities` cannot run ``model`` (the module it does not
    know, or hooks it would skip), or ``None`` when it can; :func:`cs_utils.occlusion_map` then
    falls back to one plain forward pass per occluded copy."""
    try:
        _compile(model)
    except _Unsupported as reason:
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
        if isinstance(op, _Pointwise) or (isinstance(op, _Conv) and op.pointwise):
            steps.append(None)
        elif isinstance(op, _Conv):
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


def _cached_plan(ops, height, width, corners, patch, chunk, fraction):
    key = (tuple(op.signature() for op in ops), height, width, tuple(corners), patch, chunk, fraction)
    if key not in _plans:
        lo = np.array(corners, dtype=np.int64).reshape(-1, 2)
        size = np.array(patch, dtype=np.int64)
        first = _Geometry(np.array([height, width]), lo, lo + size, lo, size)
        _plans[key] = _plan(ops, first, chunk, fraction)
        while len(_plans) > 4:
            _plans.popitem(last=False)
    _plans.move_to_end(key)
    return _plans[key]


# --------------------------------------------------------------------------- running the copies

def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _Table:
    """The original activation (padded), flattened to pixels x channels, with room behind it for a
    batch of copies' windows; :meth:`assemble` builds input windows from both."""

    def __init__(self, original: torch.Tensor, pads, rows: int, room: int):
        top, bottom, left, right = pads
        padded = F.pad(original, (left, right, top, bottom)) if any(pads) else original
        channels = original.shape[1]
        self.rows = rows
        self.data = original.new_empty(rows + room, channels)
        self.data[:rows] = padded[0].permute(1, 2, 0).reshape(rows, channels)

    def assemble(self, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        copies, channels = values.shape[:2]
        flat = values.permute(0, 2, 3, 1).reshape(-1, channels)
        self.data[self.rows:self.rows + flat.shape[0]] = flat
        out = self.data.index_select(0, index.reshape(-1))
        return out.view(*index.shape, channels).permute(0, 3, 1, 2)


def _original_pass(ops, steps, x, room: int, tables: dict) -> torch.Tensor:
    """``x`` through ``ops`` on whole maps, keeping the tables the copies' windows need."""
    for op, step in zip(ops, steps):
        if step is not None and step[0] == "window":
            tables[id(step)] = _Table(x, op.padding(*x.shape[-2:]), step[3], room * step[4])
        if step is not None and step[0] == "residual":
            y = _original_pass(op.body, step[1], x, room, tables)
            for which, original in enumerate((x, y)):
                if step[2][which] is not None:
                    tables[(id(step), which)] = _Table(original, (0, 0, 0, 0), step[3], room * step[4][which])
            x = y + x
        else:
            x = op.full(x)
    return x


def _window_pass(ops, steps, values, part: slice, tables: dict) -> torch.Tensor:
    """The copies' windows (``part`` of the copies) through ``ops``."""
    for op, step in zip(ops, steps):
        if step is None or step[0] == "full":
            values = op.full(values)
        elif step[0] == "window":
            values = op.window(tables[id(step)].assemble(values, step[2][part]))
        else:
            y = _window_pass(op.body, step[1], values, part, tables)
            x_on, y_on = (v if index is None else tables[(id(step), which)].assemble(v, index[part])
                          for which, (v, index) in enumerate(zip((values, y), step[2])))
            values = _channels_last(y_on) + x_on
    return values


def _classify(head: list, pooled: torch.Tensor) -> torch.Tensor:
    for layer in head:
        pooled = F.linear(pooled, layer[1], layer[2]) if layer[0] == "linear" else pooled.clamp(*layer[1])
    return pooled


def incremental_occluded_probabilities(model: nn.Module, x: torch.Tensor, target: torch.Tensor, corners,
                                       patch, colours: torch.Tensor, *, batch_size: int | None = None,
                                       fraction: float = FULL_MAP_FRACTION, on_batch=None):
    """The softmax probability of each image's target class, for the image and for each occluded copy.

    ``x``: the model's input images (N, C, H, W) on its device and in its dtype (their values
    are not range-checked here: :func:`cs_utils.occlusion_map` checks them); ``target``: (N,)
    class indices; ``corners``: the (top, left) of each patch (see
    :func:`cs_utils.occlusion_windows`); ``patch``: its (height, width); ``colours``: (N, C)
    patch colour per image. ``batch_size`` copies (default :data:`INCREMENTAL_BATCH_SIZE`) are
    computed together; ``fraction``: see :data:`FULL_MAP_FRACTION` (0: whole maps at every
    layer; above 1: windows at every layer); ``on_batch(count)`` is called after each batch.
    Returns ``(original (N,), occluded (N, len(corners)))``, equal to plain forward passes of the
    copies in eval mode (batch norm with its running statistics, no dropout) up to float rounding,
    without a graph. Raises ``ValueError`` for a model
    :func:`why_not_incremental` rejects and for arguments that do not fit together.
    """
    try:
        ops, head = _compile(model)
    except _Unsupported as reason:
        raise ValueError(f"incremental occlusion cannot run this model: {reason}; use the plain path "
                         f"(cs_utils.occlusion_map(..., incremental=False))") from None
    chunk = INCREMENTAL_BATCH_SIZE if batch_size is None else positive_int(batch_size, "batch_size")
    ph, pw = int_pair(patch, "patch")
    corners = [tuple(int(v) for v in c) for c in corners]
    _check_copies(x, target, corners, (ph, pw), colours, fraction)
    with torch.no_grad():
        return _occluded_probabilities(ops, head, x, target, corners, (ph, pw), colours, chunk, fraction,
                                       on_batch)


def _check_copies(x, target, corners, patch, colours, fraction) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got {getattr(x, 'shape', x)!r}")
    n, channels, height, width = x.shape
    if not isinstance(target, torch.Tensor) or target.shape != (n,):
        raise ValueError(f"target must be a tensor of {n} class indices (one per image), got {target!r}")
    if not isinstance(colours, torch.Tensor) or colours.shape != (n, channels):
        raise ValueError(f"colours must be a tensor of shape ({n}, {channels}) (one patch colour per image), "
                         f"got {getattr(colours, 'shape', colours)!r}")
    bad = [c for c in corners
           if len(c) != 2 or min(c) < 0 or c[0] + patch[0] > height or c[1] + patch[1] > width]
    if not corners or bad:
        raise ValueError(f"every corner must place the {patch[0]}x{patch[1]} patch inside the "
                         f"{height}x{width} image, got {bad[:3] if bad else 'no corners'}; "
                         "cs_utils.occlusion_windows gives them")
    if not fraction >= 0:
        raise ValueError(f"fraction must be a share of the map >= 0, got {fraction!r}")


def _occluded_probabilities(ops, head, x, target, corners, patch, colours, chunk, fraction, on_batch):
    n, _, height, width = x.shape
    ph, pw = patch
    steps, last = _cached_plan(ops, height, width, corners, (ph, pw), chunk, fraction)
    steps = _on_device(steps, x.device)
    originals = torch.empty(n, dtype=x.dtype, device=x.device)
    occluded = torch.empty(n, len(corners), dtype=x.dtype, device=x.device)
    starts = torch.from_numpy(last.start).to(x.device)
    ends = torch.from_numpy(last.size).to(x.device)
    for i in range(n):
        tables = {}
        final = _original_pass(ops, steps, _channels_last(x[i:i + 1]), chunk, tables)
        pooled = final.mean(dim=(2, 3))
        originals[i] = _classify(head, pooled).softmax(dim=1)[0, target[i]]
        # window sums of the original's last map, from its summed-area table
        area = F.pad(final[0].double().cumsum(1).cumsum(2), (1, 0, 1, 0))
        for first in range(0, len(corners), chunk):
            part = slice(first, min(first + chunk, len(corners)))
            fill = colours[i].view(1, -1, 1, 1).expand(part.stop - first, -1, ph, pw)
            values = _window_pass(ops, steps, _channels_last(fill.contiguous()), part, tables)
            if last.full:
                copies = values.mean(dim=(2, 3))
            else:
                (r0, c0), (r1, c1) = starts[part].T, (starts[part] + ends).T
                before = (area[:, r1, c1] - area[:, r0, c1] - area[:, r1, c0] + area[:, r0, c0]).T
                change = (values.sum(dim=(2, 3)).double() - before) / (final.shape[-2] * final.shape[-1])
                copies = pooled + change.to(x.dtype)
            occluded[i, part] = _classify(head, copies).softmax(dim=1)[:, target[i]]
            if on_batch is not None:
                on_batch(part.stop - first)
    return originals, occluded


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
