"""A network as a list of operations that incremental occlusion can run on windows of its maps.

:func:`compile_ops` turns an EfficientNet-Lite (or a plain stack of convolutions, batch norms,
ReLU-like activations and residual blocks) into :class:`Conv` (batch norm folded in, with its
clamp), :class:`Pointwise` and :class:`Residual` operations up to the global average pool, and the
classifier after it; :class:`Unsupported` says why a model cannot be compiled.
:mod:`cs_utils.engine.incremental_occlusion` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module_hooks

from ..models import Conv2dSame, EfficientNetLite, InputScaling, MBConv
from .folding import bn_scale_shift

__all__ = ["Conv", "Pointwise", "Residual", "Unsupported", "compile_ops", "run_full"]


class Unsupported(Exception):
    """The model has something the incremental path does not know; the message says what."""


# --------------------------------------------------------------------------- the model as operations

@dataclass(eq=False)
class Pointwise:
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
class Conv:
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
class Residual:
    """``body(x) + x``."""

    body: list

    def full(self, x: torch.Tensor) -> torch.Tensor:
        return run_full(self.body, x) + x

    def signature(self):
        return ("residual", tuple(op.signature() for op in self.body))


def _clamp(x: torch.Tensor, bounds, inplace: bool = True) -> torch.Tensor:
    if bounds is None:
        return x
    return x.clamp_(*bounds) if inplace else x.clamp(*bounds)


def run_full(ops: list, x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.full(x)
    return x


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout2d)


def _activation(module: nn.Module) -> tuple:
    if type(module) is nn.ReLU:
        return (0.0, None)
    return (float(module.min_val), float(module.max_val))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, clamp) -> Conv:
    """``conv`` then ``bn`` (eval mode) as one convolution: the same function, folded in float64."""
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise Unsupported("a convolution with dilation or non-zero padding mode")
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
    return Conv(weight.to(dtype).contiguous(), bias.to(dtype), tuple(conv.stride), conv.groups, same, pads,
                 clamp)


def _check_bn(name: str, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise Unsupported(f"{name} (a BatchNorm2d without running statistics normalises by the batch)")


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
            ops.append(Pointwise(scale.to(dtype), shift.to(dtype), None))
        elif kind is InputScaling:
            scale = 1 / module.std.flatten()
            ops.append(Pointwise(scale, -module.mean.flatten() * scale, None))
        elif kind in _ACTIVATIONS:
            ops.append(Pointwise(None, None, _activation(module)))
        elif kind is MBConv:
            parts = [module.expand] if module.expand is not None else []
            body, end = _compile_spatial([item for part, label in zip(
                parts + [module.depthwise, module.project],
                (["expand"] if parts else []) + ["depthwise", "project"])
                for item in _flatten(f"{name}.{label}", part)])
            if end != -1:
                raise Unsupported(f"{name} (a pool inside a block)")
            ops += [Residual(body)] if module.has_skip else body
        elif kind is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
            return ops, i
        elif kind not in _SKIPPED:
            raise Unsupported(f"{name} ({kind.__name__})")
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
                raise Unsupported(f"{name} (a Flatten other than Flatten(1))")
        elif kind not in _SKIPPED:
            raise Unsupported(f"{name} ({kind.__name__} after the global pool)")
    return head


def compile_ops(model: nn.Module) -> tuple[list, list]:
    """(operations up to the pool, classifier) of ``model``; raises :class:`Unsupported`."""
    if _module_hooks._has_any_global_hook():
        raise Unsupported("global module hooks are registered, and the incremental path would not call them")
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            raise Unsupported(f"{name or 'the model'} has forward hooks, which the incremental path would "
                               "not call")
        if "forward" in vars(module):
            raise Unsupported(f"{name or 'the model'} has its own forward function")
    if type(model) is EfficientNetLite:
        items = [item for label in ("input_scaling", "stem", "blocks", "head", "pool", "dropout", "fc")
                 for item in _flatten(label, getattr(model, label))]
    elif type(model) is nn.Sequential:
        items = _flatten("", model)
    else:
        raise Unsupported(f"the model is a {type(model).__name__}; it knows EfficientNetLite and "
                           "nn.Sequential")
    ops, pool = _compile_spatial(items)
    if pool == -1:
        raise Unsupported("the model has no global average pool (AdaptiveAvgPool2d(1)) before its "
                           "classifier")
    return ops, _compile_head(items[pool + 1:])
