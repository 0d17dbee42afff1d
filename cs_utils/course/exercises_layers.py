"""The exercises on layers and feature spaces: receptive_field (receptive_fields.py),
nearest_neighbours (neighbours.py), instance_norm (fast_style.py) and mix_styles (style.py).

Importing this module registers them.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from torch import nn

from .exercise_registry import (
    Exercise,
    Mistake,
    _rng,
    register,
)

__all__: list[str] = []   # importing the module registers its exercises


# ---- feature-space exercises


RF_LAYERS = ("stem", "blocks.1", "blocks.5")


def _dilated_net():
    """A small network with padding, a dilated convolution and a pool: what receptive fields compose."""

    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("pool", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    net.add_module("conv3", nn.Conv2d(4, 4, 5, stride=2, padding=1))
    return net.eval()


def _rf_inputs():
    return {"input_size": np.array(64)}


def _rf_run(fn, t, ctx):
    model, size = ctx.model(), int(t["input_size"])
    lite0_layers = RF_LAYERS if "blocks" not in t else ("stem", *(f"blocks.{int(i)}" for i in t["blocks"]))
    outputs = {}
    for model_name, net, layers in (("lite0", model, lite0_layers), ("dilated", _dilated_net(), ("conv3",))):
        for layer in layers:
            field_ = fn(net, layer, size)
            outputs[f"{model_name}_{layer}"] = np.array([field_.size, field_.stride, field_.offset],
                                                        dtype=np.float64)
    return outputs


def _rf_variant(kind):
    def wrong(model, layer, input_size):
        ### BEGIN SOLUTION
        from ..receptive_fields import ReceptiveField, spatial_ops_before

        input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        ops, output_size = spatial_ops_before(model, layer, input_size)
        size, stride, offset = [1, 1], [1, 1], [0, 0]
        for kernel, step, dilation, pad in ops:
            for d in range(2):
                if kind == "stride_first":
                    stride[d] *= step[d]
                size[d] += (kernel[d] - 1) * (1 if kind == "no_dilation" else dilation[d]) * stride[d]
                offset[d] -= 0 if kind == "no_padding" else pad[d] * stride[d]
                if kind != "stride_first":
                    stride[d] *= step[d]
        return ReceptiveField(tuple(size), tuple(stride), tuple(offset), input_size, tuple(output_size))
        ### END SOLUTION
    return wrong


register(Exercise(
    name="receptive_field", module="receptive_fields", function="receptive_field",
    make_inputs=_rf_inputs, run=_rf_run, tolerance=0.0, uses_model=True,
    hint="walk the operations in order with j = the input distance between neighbouring units (product "
         "of the strides so far): size += (k - 1) * d * j; offset -= p * j; then j *= s",
    mistakes=(
        Mistake("stride_first", "j (the product of strides) is updated before it is used: grow size and "
                "offset with the strides of the layers *before* this one", _rf_variant("stride_first")),
        Mistake("no_dilation", "the dilation is missing: a dilated kernel spans (k - 1) * d + 1 inputs",
                _rf_variant("no_dilation")),
        Mistake("no_padding", "the padding is missing from the offset: offset -= p * j",
                _rf_variant("no_padding")),
    ),
))


def _nn_inputs():
    rng = _rng(5)
    queries = rng.standard_normal((4, 3, 2, 2))
    gallery = np.concatenate([rng.standard_normal((5, 3, 2, 2)), queries, rng.standard_normal((3, 3, 2, 2))])
    # queries 0, 2 and 3 skip themselves (gallery items 5, 7, 8): the usual leave-one-out query
    return {"queries": queries, "gallery": gallery, "k": np.array(3), "exclude": np.array([5, -1, 7, 8])}


def _nn_run(fn, t, ctx):
    k = int(t["k"])
    d, i = fn(t["queries"], t["gallery"], k)
    d_ex, i_ex = fn(t["queries"], t["gallery"], k, exclude=t["exclude"])
    return {"distances": d, "indices": i, "distances_exclude": d_ex, "indices_exclude": i_ex}


def _nn_variant(kind):
    def wrong(queries, gallery, k, *, exclude=None):
        ### BEGIN SOLUTION
        q, g = queries.reshape(len(queries), -1), gallery.reshape(len(gallery), -1)
        distances = torch.cdist(q, g)
        if kind == "squared":
            distances = distances.pow(2)
        if exclude is not None and kind != "no_exclude":
            for row, col in enumerate(torch.as_tensor(exclude).tolist()):
                if col >= 0:
                    distances[row, col] = math.inf
        values, order = torch.sort(distances, dim=1, descending=kind == "farthest")
        return values[:, :k], order[:, :k]
        ### END SOLUTION
    return wrong


register(Exercise(
    name="nearest_neighbours", module="neighbours", function="nearest_neighbours",
    make_inputs=_nn_inputs, run=_nn_run, tolerance=1e-9,
    hint="Euclidean distances between the flattened queries and gallery items (torch.cdist, no loop over "
         "pairs), excluded items set to inf, the k smallest per query, nearest first",
    mistakes=(
        Mistake("squared", "squared distances; return the Euclidean distance (the square root)",
                _nn_variant("squared")),
        Mistake("no_exclude", "exclude is ignored: set the excluded gallery item's distance to inf",
                _nn_variant("no_exclude")),
        Mistake("farthest", "sorted farthest first; the nearest come first", _nn_variant("farthest")),
    ),
))


# ---- style exercises


def _norm_inputs():
    rng = _rng(6)
    return {"x": rng.standard_normal((2, 3, 5, 4)) * 3 + 1, "eps": np.array(0.1)}


def _norm_run(fn, t, ctx):
    return {"default_eps": fn(t["x"]), "eps": fn(t["x"], eps=float(t["eps"]))}


def _norm_variant(kind):
    def wrong(x, eps=1e-5):
        ### BEGIN SOLUTION
        dims = {"layer": (1, 2, 3), "batch": (0, 2, 3)}.get(kind, (2, 3))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=kind == "unbiased")
        if kind == "eps_outside":
            return (x - mean) / (var.sqrt() + eps)
        return (x - mean) / torch.sqrt(var + eps)
        ### END SOLUTION
    return wrong


register(Exercise(
    name="instance_norm", module="fast_style", function="instance_norm",
    make_inputs=_norm_inputs, run=_norm_run, tolerance=1e-6,
    hint="for each image and channel: (x - mean) / sqrt(var + eps) over its H*W pixels, biased variance",
    mistakes=(
        Mistake("unbiased", "the unbiased variance (divide by H*W - 1); instance norm uses the biased one "
                "(divide by H*W)", _norm_variant("unbiased")),
        Mistake("eps_outside", "eps goes inside the square root: sqrt(var + eps)",
                _norm_variant("eps_outside")),
        Mistake("layer", "statistics over (C, H, W) is layer norm; use each channel's own H x W pixels",
                _norm_variant("layer")),
        Mistake("batch", "statistics over (N, H, W) is batch norm; use each image's own pixels",
                _norm_variant("batch")),
    ),
))


def _mix_inputs():
    rng = _rng(7)
    return {"a_0": rng.standard_normal((1, 3, 3)), "a_1": rng.standard_normal((1, 4, 4)),
            "b_0": rng.standard_normal((1, 3, 3)), "b_1": rng.standard_normal((1, 4, 4)),
            "weights": np.array([0.25, 0.75])}


def _style_targets_class(fn):
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    cls = getattr(module, "StyleTargets", None)
    if cls is None:
        from ..style import StyleTargets as cls
    return cls


def _mix_run(fn, t, ctx):
    targets_cls = _style_targets_class(fn)
    layers = ("blocks.0", "blocks.2")
    a = targets_cls(layers, (t["a_0"], t["a_1"]))
    b = targets_cls(layers, (t["b_0"], t["b_1"]))
    mixed = fn([a, b], [float(w) for w in t["weights"]])
    return {"gram_0": mixed.grams[0], "gram_1": mixed.grams[1]}


def _mix_variant(kind):
    def wrong(targets, weights):
        ### BEGIN SOLUTION
        cls = type(targets[0])
        if kind == "mean":
            weights = [1.0 / len(targets)] * len(targets)
        else:  # "reversed"
            weights = list(reversed(weights))
        layers = range(len(targets[0].layers))
        grams = tuple(sum(w * t.grams[i] for w, t in zip(weights, targets)) for i in layers)
        return cls(targets[0].layers, grams)
        ### END SOLUTION
    return wrong


register(Exercise(
    name="mix_styles", module="style", function="mix_styles",
    make_inputs=_mix_inputs, run=_mix_run, tolerance=1e-9,
    hint="at every layer l: sum over styles k of weights[k] * targets[k].grams[l], returned as StyleTargets",
    mistakes=(
        Mistake("mean", "the weights are ignored (a plain mean)", _mix_variant("mean")),
        Mistake("reversed", "the weights are paired with the wrong styles: weights[k] goes with targets[k]",
                _mix_variant("reversed")),
    ),
))
