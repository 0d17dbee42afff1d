"""A copy of a network to optimise images through: batch norm folded into the convolutions.

In eval mode a batch norm is an affine map per channel, ``y * scale + shift``, so a convolution
followed by one is a single convolution with weights ``w * scale`` and bias ``b * scale + shift``:
the same function, one layer fewer. PyTorch computes each batch norm's backward as a layer of
its own, and optimising an image (style transfer, texture synthesis, DeepDream, feature
inversion, adversarial attacks) runs a forward and a backward pass at every evaluation, so one
layer fewer per batch norm saves time at every evaluation (the times are in
``benchmarks/README.md``). The folding itself is torch's ``torch.nn.utils.fusion.fuse_conv_bn_weights``,
in float64.

:func:`folded_copy` returns such a copy and leaves the caller's model as it was: its modules,
hooks, modes and ``requires_grad`` are not touched. Only what is certainly the same function is
folded: a ``Conv2d`` followed, inside an ``nn.Sequential``, by a ``BatchNorm2d`` with running
statistics, the convolution not one of the layers whose output the caller reads (``keep``), in
a model without hooks. The batch norm's place is taken by an ``nn.Identity``, so every layer
keeps its name and each named output stays what it was, up to float rounding.
"""

from __future__ import annotations

import copy
import itertools
import weakref

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..models import Conv2dSame

__all__ = ["bn_scale_shift", "folded_copy", "gradient_network"]

# Modules whose forward code is known not to depend on the memory layout of its input (no
# ``.view`` of a possibly channels-last tensor): only models built from these are made channels-last.
_LAYOUT_SAFE_PACKAGES = ("torch.nn.", "torchvision.", "cs_utils.")


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch norm in eval mode as ``x * scale + shift`` per channel (float64)."""
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) in (nn.Conv2d, Conv2dSame) and type(bn) is nn.BatchNorm2d
            and bn.running_mean is not None and bn.running_var is not None
            and conv.weight.shape[0] == bn.num_features
            and not parametrize.is_parametrized(conv) and not _hooked(conv) and not _hooked(bn))


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Replace ``conv``'s weight and bias by those of ``conv`` then ``bn``: torch's
    ``fuse_conv_bn_weights``, computed in float64 and stored in the convolution's dtype."""
    def double(t):
        return None if t is None else t.detach().double()

    weight, bias = fuse_conv_bn_weights(double(conv.weight), double(conv.bias), double(bn.running_mean),
                                        double(bn.running_var), bn.eps, double(bn.weight), double(bn.bias))
    dtype, device = conv.weight.dtype, conv.weight.device
    conv.weight = nn.Parameter(weight.detach().to(device, dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach().to(device, dtype), requires_grad=False)


def _layout_safe(model: nn.Module) -> bool:
    return all(type(m).__module__.startswith(_LAYOUT_SAFE_PACKAGES) for m in model.modules())


def _foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The names ``(conv, bn)`` of every convolution followed, in an ``nn.Sequential``, by a batch
    norm it can absorb (:func:`_foldable`)."""
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
                if _foldable(conv, bn):
                    pairs.append((f"{name}.{conv_name}" if name else conv_name,
                                  f"{name}.{bn_name}" if name else bn_name))
    return pairs


def folded_copy(model: nn.Module, *, keep=()) -> nn.Module:
    """A copy of ``model`` in eval mode for optimising images through: every foldable
    convolution + batch norm pair (see the module's docstring) folded into one convolution, its
    parameters without ``requires_grad``, and, on the CPU for a network built only from
    ``torch.nn``, torchvision and ``cs_utils`` modules, its weights in channels-last layout.

    ``keep``: names of layers whose own output the caller reads (a convolution named there is
    not folded: its output would become the batch norm's). Returns ``model`` itself (never
    modified) when there is nothing to fold, when any of its modules has a hook (a copy would
    call copies of the hooks, whose state the caller would not see), or when it cannot be copied.
    """
    keep = {keep} if isinstance(keep, str) else set(keep)
    pairs = [(conv, bn) for conv, bn in _foldable_pairs(model) if conv not in keep]
    if not pairs or any(_hooked(m) for m in model.modules()):
        return model   # nothing to gain, or hooks whose state a copy would not share
    params = list(model.parameters())
    channels_last = all(p.device.type == "cpu" for p in params) and _layout_safe(model)
    try:
        net = copy.deepcopy(model)
    except Exception:   # a module that cannot be copied: optimise through the model as it is
        return model
    net.eval().requires_grad_(False)
    for conv_name, bn_name in pairs:
        _fold_into(net.get_submodule(conv_name), net.get_submodule(bn_name))
        parent, _, child = bn_name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net.eval()   # the Identity modules too


# {model: {frozenset(keep): (fingerprint, folded copy or None for "the model itself")}}
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEPT_PER_MODEL = 4


def _fingerprint(model: nn.Module) -> tuple:
    """What a folded copy depends on: every module, and every parameter's and buffer's identity,
    storage and in-place version (changed by an optimiser step, ``load_state_dict``, ``.to()``)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple(map(id, model.modules())), tuple((id(t), t.data_ptr(), t._version) for t in tensors)


def gradient_network(model: nn.Module, *, keep=()) -> nn.Module:
    """:func:`folded_copy` of ``model``, made once and reused while the model's modules,
    parameters and buffers stay the same (a technique that takes one gradient, such as a saliency
    map, would otherwise spend more on the copy than it saves). ``model`` itself when it has a
    hook, when nothing folds or when it cannot be fingerprinted. At most four copies per model
    (one per set of kept convolutions that would otherwise fold) are kept, and none outlives its
    model."""
    keep = frozenset({keep} if isinstance(keep, str) else keep)
    if any(_hooked(m) for m in model.modules()):
        return model
    try:
        fingerprint = _fingerprint(model)
        # only a kept convolution that would be folded changes the copy: layers such as blocks.10
        # share one copy (DeepDream and feature inversion over several layers)
        keep = keep & {conv for conv, _ in _foldable_pairs(model)}
        entries = _NETWORKS.setdefault(model, {})
    except (RuntimeError, TypeError, NotImplementedError):   # meta or inference tensors, no weak reference
        return model
    cached = entries.get(keep)
    if cached is not None and cached[0] == fingerprint:
        return model if cached[1] is None else cached[1]
    net = folded_copy(model, keep=keep)
    if len(entries) >= _KEPT_PER_MODEL:
        entries.pop(next(iter(entries)))
    entries[keep] = (fingerprint, None if net is model else net)   # never a strong reference to the key
    return net
