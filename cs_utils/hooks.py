"""Forward and gradient hooks as context managers that always clean up.

Layers are named as in ``model.named_modules()`` (``"blocks.10"``,
``"stem.2"``, ...). Every hook registered here is removed when the ``with``
block ends, also when it ends with an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .validation import validate_layer

__all__ = ["capture_activations", "capture_gradients", "get_layer", "layer_names"]


def layer_names(model: nn.Module) -> list[str]:
    """Every hookable layer name of ``model`` (``named_modules()``, the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises a ``KeyError`` listing close ones."""
    return model.get_submodule(validate_layer(model, name))


def _as_names(names) -> list[str]:
    if isinstance(names, str):
        return [names]
    if not isinstance(names, Iterable):
        raise TypeError(f"layer_names must be a string or a list of strings, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise ValueError("layer_names is empty: name at least one layer")
    return names


@contextlib.contextmanager
def _hooked(model: nn.Module, names: list[str], make_hook) -> Iterator[None]:
    modules = [(name, get_layer(model, name)) for name in names]  # validate before registering
    handles = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_activations(model: nn.Module, layer_names, *, detach: bool = False) -> Iterator[dict]:
    """Record the output of each named layer during forward passes inside the block.

    Yields a dict ``{layer_name: output tensor}``, filled (and overwritten) by
    every forward pass. With ``detach=False`` (default) the tensors stay in the
    autograd graph, so losses on them can be backpropagated; ``detach=True``
    stores detached tensors (cheaper when only looking)::

        with capture_activations(model, ["blocks.3", "blocks.10"]) as acts:
            model(x)
        acts["blocks.10"].shape   # (N, 112, H/16, W/16)
    """
    names = _as_names(layer_names)
    activations: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(module, inputs, output):
            activations[name] = output.detach() if detach else output
        return hook

    with _hooked(model, names, make_hook):
        yield activations


@contextlib.contextmanager
def capture_gradients(model: nn.Module, layer_names) -> Iterator[dict]:
    """Record the gradient of the loss with respect to each named layer's output.

    Yields a dict ``{layer_name: gradient tensor}`` (same shape as the layer's
    output), filled when ``backward()`` runs inside the block. Layers whose
    output does not require grad (e.g. in ``torch.no_grad()``) get no entry::

        x = x.clone().requires_grad_(True)   # frozen models need a grad path
        with capture_gradients(model, "blocks.10") as grads:
            model(x)[0, 967].backward()
        grads["blocks.10"]
    """
    names = _as_names(layer_names)
    gradients: dict[str, torch.Tensor] = {}
    tensor_handles = []

    def make_hook(name):
        def store(grad):
            gradients[name] = grad.detach()

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                tensor_handles.append(output.register_hook(store))
        return hook

    try:
        with _hooked(model, names, make_hook):
            yield gradients
    finally:
        for handle in tensor_handles:  # graphs kept alive by the caller stay hook-free
            handle.remove()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once every requested layer has run."""


def extract_features(model: nn.Module, x: torch.Tensor, layer_names, *, stop: bool = True) -> dict:
    """Run ``model`` on ``x`` and return ``{layer_name: output}`` for the named layers.

    With ``stop=True`` (default) the forward pass ends as soon as the last of the
    named layers has produced its output, so nothing after the deepest layer is
    computed: a feature loss on ``blocks.4`` costs a fraction of a full forward.
    The outputs stay in the autograd graph (gradients flow back to ``x``); wrap
    the call in ``torch.no_grad()`` when only looking. No hook is left behind::

        feats = extract_features(model, x, ["stem", "blocks.4"])
        feats["blocks.4"].shape      # (N, 40, H/8, W/8)
    """
    names = _as_names(layer_names)
    features: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(module, inputs, output):
            features[name] = output
            if stop and len(features) == len(names):
                raise _StopForward
        return hook

    with _hooked(model, names, make_hook):
        try:
            model(x)
        except _StopForward:
            pass
    missing = [name for name in names if name not in features]
    if missing:
        raise RuntimeError(f"layers {missing} did not run in the forward pass; "
                           "pick layers that the model's forward() calls")
    return {name: features[name] for name in names}


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode inside the block; restore each one's mode after.

    Techniques use it so that batch norm and dropout behave as at test time
    without changing the caller's model for good, also when an exception escapes.
    """
    modes = [(module, module.training) for module in model.modules()]
    if not any(training for _, training in modes):   # already in eval mode: nothing to set or restore
        yield model
        return
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.train(training)
