"""Objectives: what an image optimisation minimises, as small composable callables (as in Lucent).

An objective is ``objective(x) -> scalar loss to minimise`` with a ``name``. Objectives
add, subtract, scale and sum::

    objective = class_score(model, 1) + 0.1 * channel(model, "blocks.10", 5)
    objective = sum(layer_l2(model, name) for name in ("blocks.4", "blocks.7"))
    objective = style_weight * gram_match(...) + content_weight * feature_match(...)

and every technique that runs on :func:`cs_utils.optimize_image` builds its loss from them:

=========================================================  ============================================
objective                                                  loss (summed over the batch)
=========================================================  ============================================
``class_score(model, target)``                             ``-s_target(x)``, the unnormalised score
``channel(model, layer, channel)``                         ``-mean`` of one channel over positions
``neuron(model, layer, channel, position=None)``           ``-`` one unit (default: the centre)
``direction(model, layer, vector, cosine_power=0)``        ``-<phi(x), v>`` (times ``cos^p``)
``layer_l2(model, layer)``                                 ``-0.5 * ||phi(x)||^2`` (DeepDream)
``feature_match(model, layer, target, weight=None)``       ``weight * ||phi(x) - target||^2``
                                                           (default ``1/||target||^2``: inversion)
``gram_match(model, layers, target_grams, layer_weights)`` ``style_loss`` of the Gram matrices
``cross_entropy(model, labels)``                           cross-entropy of ``labels`` (PGD)
``total_variation(weight, beta)``                          ``tv_loss(x, weight, beta)``
=========================================================  ============================================

**One forward pass per evaluation.** An objective that reads a model declares the
layers it reads (``Objective(fn, name, model=model, layers=[...])``: ``fn`` then
receives ``{layer: activation}``). Evaluating an objective, or a sum of them, runs
each model once on ``x`` for all layers its terms read: the pass stops after the
deepest layer (:func:`cs_utils.extract_features`), or runs to the end when a term reads
the model's output (the layer name :data:`MODEL_OUTPUT`, ``""``, as the root module is
called in ``named_modules()``). So style transfer's Gram and content terms share one
pass, as in Lucent's hooked model. No hook outlives an evaluation, also after an error.

**Terms in the history.** ``objective.track("style")`` returns the same objective whose
value :func:`cs_utils.optimize_image` records in ``history.extra["style"]`` at every
evaluation; inside a sum, each tracked term is recorded unscaled.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from . import validation
from .engine.gram import gram_losses
from .hooks import capture_activations, extract_features
from .losses import content_loss, tv_loss

__all__ = [
    "MODEL_OUTPUT",
    "Objective",
    "channel",
    "class_score",
    "cross_entropy",
    "direction",
    "diversity",
    "feature_match",
    "gram_match",
    "layer_l2",
    "neuron",
    "total_variation",
]

#: The "layer" name of a model's output (class scores): the name of the root module.
MODEL_OUTPUT = ""


# ----------------------------------------------------------------------------- the algebra

class Objective:
    """A loss to minimise, ``objective(x) -> scalar``, with a ``name``.

    ``Objective(fn, name)``: ``fn(x) -> loss`` of the image ``x``.
    ``Objective(fn, name, model=model, layers=[...])``: ``fn(features) -> loss`` of the
    activations ``features = {layer: tensor}`` of ``model`` on ``x`` (at least the named layers;
    :data:`MODEL_OUTPUT` names the model's output), computed once for every term of a sum.

    Objectives add (``a + b``, ``sum([a, b, c])``), subtract (``a - b``) and scale
    (``0.5 * a``, ``a * 0.5``, ``-a``). :meth:`evaluate` returns the value and the tracked terms.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], name: str = "objective", *, model=None,
                 layers: Sequence[str] | None = None):
        if not callable(fn):
            raise TypeError(f"an objective needs a callable fn, got {type(fn).__name__}")
        if (model is None) != (layers is None):
            raise ValueError("give both model and layers (fn then receives the features), or neither")
        self.fn, self.name, self.key = fn, str(name), None
        self.model = None if model is None else validation.validate_model(model)
        self.layers: tuple[str, ...] = ()
        if layers is not None:
            names = [layers] if isinstance(layers, str) else list(layers)
            if not names:
                raise ValueError("layers must name at least one layer (MODEL_OUTPUT for the output)")
            self.layers = tuple(n if n == MODEL_OUTPUT else validation.validate_layer(model, n)
                                for n in names)

    # -- evaluation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluate(x)[0]

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(value, {key: value of each tracked term})`` with one forward pass per model."""
        features = _forward(self._reads(), x)
        tracked: dict[str, torch.Tensor] = {}
        return self._value(x, features, tracked), tracked

    def _reads(self) -> list[tuple[torch.nn.Module, tuple[str, ...]]]:
        return [(self.model, self.layers)] if self.model is not None else []

    def _own_value(self, x, features, tracked) -> torch.Tensor:
        if self.model is None:
            return self.fn(x)
        return self.fn(features[id(self.model)])

    def _value(self, x, features, tracked) -> torch.Tensor:
        value = self._own_value(x, features, tracked)
        if self.key is not None:
            tracked[self.key] = value if self.key not in tracked else tracked[self.key] + value
        return value

    def on_networks(self, networks: dict[int, torch.nn.Module]) -> Objective:
        """A copy whose terms read ``networks[id(m)]`` (the same layers, e.g. batch norm folded) for ``m``."""
        moved = copy.copy(self)
        if self.model is not None:
            moved.model = networks.get(id(self.model), self.model)
        for part in ("left", "right", "term"):          # the terms of a sum or a scaled objective
            if hasattr(self, part):
                setattr(moved, part, getattr(self, part).on_networks(networks))
        return moved

    def models(self) -> dict[int, tuple[torch.nn.Module, tuple[str, ...]]]:
        """``{id(model): (model, layers)}``: every model the objective reads, with all layers read."""
        return {key: (model, tuple(names)) for key, (model, names) in _grouped(self._reads()).items()}

    def track(self, key: str) -> Objective:
        """This objective, with its value recorded as ``history.extra[key]`` by the optimisation loop."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        tracked = copy.copy(self)
        tracked.key = key
        return tracked

    # -- algebra

    def __add__(self, other) -> Objective:
        if isinstance(other, Objective):
            return _Sum(self, other)
        if _is_zero(other):
            return self
        return NotImplemented

    def __radd__(self, other) -> Objective:
        if _is_zero(other):        # sum([a, b]) starts from 0
            return self
        if isinstance(other, Objective):
            return _Sum(other, self)
        return NotImplemented

    def __sub__(self, other) -> Objective:
        if isinstance(other, Objective):
            return _Sum(self, other, subtract=True)
        if _is_zero(other):
            return self
        return NotImplemented

    def __mul__(self, factor) -> Objective:
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            return NotImplemented
        return _Scaled(float(factor), self)

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return _Scaled(-1.0, self, name=f"-({self.name})")

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _is_zero(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


class _Sum(Objective):
    """``left + right`` (or ``left - right``), evaluated in that order."""

    def __init__(self, left: Objective, right: Objective, *, subtract: bool = False):
        self.left, self.right, self.subtract = left, right, subtract
        self.fn, self.model, self.layers, self.key = None, None, (), None
        self.name = f"{left.name} {'-' if subtract else '+'} {right.name}"

    def _reads(self):
        return self.left._reads() + self.right._reads()

    def _own_value(self, x, features, tracked):
        a = self.left._value(x, features, tracked)
        b = self.right._value(x, features, tracked)
        return a - b if self.subtract else a + b


class _Scaled(Objective):
    """``factor * term``."""

    def __init__(self, factor: float, term: Objective, *, name: str | None = None):
        self.factor, self.term = factor, term
        self.fn, self.model, self.layers, self.key = None, None, (), None
        self.name = name or f"{factor:g} * ({term.name})"

    def _reads(self):
        return self.term._reads()

    def _own_value(self, x, features, tracked):
        return self.factor * self.term._value(x, features, tracked)


def _grouped(reads) -> dict[int, tuple[torch.nn.Module, list[str]]]:
    """``{id(model): (model, [every layer read, in order])}``."""
    groups: dict[int, tuple[torch.nn.Module, list[str]]] = {}
    for model, layers in reads:
        names = groups.setdefault(id(model), (model, []))[1]
        names.extend(name for name in layers if name not in names)
    return groups


def _forward(reads, x: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
    """``{id(model): {layer: activation}}``: one forward pass of each model for every layer read."""
    return {key: _features(model, x, names) for key, (model, names) in _grouped(reads).items()}


def _features(model: torch.nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    inner = [name for name in names if name != MODEL_OUTPUT]
    if MODEL_OUTPUT not in names:
        return extract_features(model, x, inner)        # stops after the deepest layer
    if not inner:
        return {MODEL_OUTPUT: model(x)}
    with capture_activations(model, inner) as captured:
        output = model(x)
    missing = [name for name in inner if name not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} did not run in the forward pass; "
                           "pick layers that the model's forward() calls")
    return {**{name: captured[name] for name in inner}, MODEL_OUTPUT: output}


# ----------------------------------------------------------------------------- the vocabulary

def _check_channel(channel) -> int:
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
        raise TypeError(f"channel must be a non-negative int, got {channel!r}")
    return int(channel)


def _select_channel(out: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    if out.dim() < 2 or channel >= out.shape[1]:
        raise IndexError(f"channel {channel} is out of range: layer {layer!r} has "
                         f"{out.shape[1] if out.dim() > 1 else 0} channels (0..{out.shape[1] - 1})")
    return out[:, channel]


def class_score(model: torch.nn.Module, target) -> Objective:
    """``-s_target(x)`` summed over the batch: ascend the *unnormalised* class score (not the
    softmax probability, which can rise by pushing other classes down). ``target``: one class index."""
    validation.validate_model(model)
    targets = validation.class_indices(target, 1, classes=validation.num_classes(model))

    def loss(features):
        scores = features[MODEL_OUTPUT]
        index = targets.to(scores.device).expand(scores.shape[0])
        return -scores.gather(1, index[:, None]).sum()

    return Objective(loss, f"class {int(targets[0])} score", model=model, layers=[MODEL_OUTPUT])


def channel(model: torch.nn.Module, layer: str, channel) -> Objective:
    """``-mean`` activation of one channel of ``layer`` over all positions (a "feature" visualization).
    ``channel``: one index for every image, or a list with one index per image of the batch."""
    validation.validate_layer(model, layer)
    if isinstance(channel, (list, tuple)):
        indices = [_check_channel(c) for c in channel]
        if not indices:
            raise ValueError("channel is an empty list: give one channel index per image")

        def per_image(features):
            out = features[layer]
            if out.shape[0] % len(indices):
                raise ValueError(f"{len(indices)} channels for a batch of {out.shape[0]} images; give one "
                                 "channel per image")
            for c in indices:
                _select_channel(out, layer, c)          # range check with a clear message
            index = torch.tensor(indices, device=out.device).repeat(out.shape[0] // len(indices))
            chosen = out.gather(1, index.view(-1, 1, *[1] * (out.dim() - 2)).expand(-1, 1, *out.shape[2:]))
            return -chosen.mean(dim=(-2, -1)).sum()

        return Objective(per_image, f"{layer} channels {indices}", model=model, layers=[layer])
    index = _check_channel(channel)
    return Objective(lambda f: -_select_channel(f[layer], layer, index).mean(dim=(-2, -1)).sum(),
                     f"{layer} channel {index}", model=model, layers=[layer])


def neuron(model: torch.nn.Module, layer: str, channel: int, position=None) -> Objective:
    """``-activation`` of one unit: channel ``channel`` of ``layer`` at ``position`` = (row, column) of the
    layer's feature map (default: the centre), i.e. one neuron with a receptive field in the image."""
    index = _check_channel(channel)
    validation.validate_layer(model, layer)

    def loss(features):
        out = _select_channel(features[layer], layer, index)
        h, w = out.shape[-2:]
        row, col = (h // 2, w // 2) if position is None else position
        if not (0 <= row < h and 0 <= col < w):
            raise IndexError(f"position {(row, col)} is outside the {h}x{w} feature map of {layer!r}")
        return -out[:, row, col].sum()

    return Objective(loss, f"{layer} channel {index} neuron", model=model, layers=[layer])


def direction(model: torch.nn.Module, layer: str, vector: torch.Tensor, *,
              cosine_power: float = 0.0) -> Objective:
    """Maximise the projection of the ``layer`` features on ``vector``: ``-<f(x), v>``, times
    ``cos(f(x), v) ** cosine_power`` (Olah et al.'s "direction" objective: with a power > 0 the
    image must point the same way as ``v``, not just have large features). ``vector`` may be the
    features of a photo or a row of the classifier's weight matrix."""
    validation.validate_layer(model, layer)
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        raise TypeError("direction must be a float tensor of the layer's feature size")
    target = vector.detach().reshape(1, -1)

    def loss(features):
        flat = features[layer].flatten(1)
        if flat.shape[1] != target.shape[1]:
            raise ValueError(f"direction has {target.shape[1]} values but layer {layer!r} gives "
                             f"{flat.shape[1]} features per image; take it from the same layer")
        d = target.to(flat)
        dot = (flat * d).sum(dim=1)
        if cosine_power:
            cos = F.cosine_similarity(flat, d, dim=1).clamp_min(1e-4)
            dot = dot * cos ** cosine_power
        return -dot.sum()

    return Objective(loss, f"{layer} representation", model=model, layers=[layer])


def layer_l2(model: torch.nn.Module, layer: str) -> Objective:
    """``-0.5 * ||phi(x)||^2`` of ``layer``'s activation (DeepDream: its gradient at the layer is
    ``-phi(x)``, so descending it amplifies whatever the layer already sees)."""
    validation.validate_layer(model, layer)
    return Objective(lambda f: -0.5 * f[layer].pow(2).sum(), f"{layer} L2", model=model, layers=[layer])


def feature_match(model: torch.nn.Module, layer: str, target_features: torch.Tensor, *,
                  weight: float | None = None) -> Objective:
    """``weight * ||phi(x) - target||^2`` at ``layer`` (:func:`cs_utils.losses.content_loss`).

    The default ``weight=None`` is ``1 / ||target||^2``: the relative squared feature error of
    feature inversion (Mahendran & Vedaldi 2015). ``weight=1 / target.numel()`` gives the mean
    squared error, the content loss of style transfer.
    """
    validation.validate_layer(model, layer)
    if not isinstance(target_features, torch.Tensor) or not target_features.is_floating_point():
        raise TypeError("target_features must be a float tensor: the layer's activation of the target image")
    target = target_features.detach()
    if weight is None:
        weight = 1.0 / target.pow(2).sum().clamp(min=1e-12).item()
    return Objective(lambda f: content_loss(f[layer], target, weight=weight), f"{layer} feature match",
                     model=model, layers=[layer])


def gram_match(model: torch.nn.Module, layers: Sequence[str], target_grams: Sequence[torch.Tensor],
               layer_weights: float | Sequence[float] = 1.0) -> Objective:
    """``sum_l w_l * mean((G_l(x) - A_l)^2)`` (:func:`cs_utils.losses.style_loss`): match the Gram matrices
    ``target_grams[i]`` of a texture or style at ``layers[i]`` (texture synthesis, style transfer)."""
    layers = validation.validate_layers(model, layers)
    grams = list(target_grams)
    if len(grams) != len(layers) or not all(isinstance(g, torch.Tensor) for g in grams):
        raise ValueError(f"give one target Gram matrix (a tensor) per layer: {len(layers)} layers, "
                         f"{len(grams)} targets")
    if not isinstance(layer_weights, numbers.Real):
        layer_weights = list(layer_weights)
        if len(layer_weights) != len(layers):
            raise ValueError(f"{len(layer_weights)} layer weights for {len(layers)} layers")
    # gram_losses: the value of (the student's) style_loss, with one matrix product fewer per layer backward
    return Objective(lambda f: gram_losses([f[name] for name in layers], grams, layer_weights),
                     f"Gram match ({', '.join(layers)})", model=model, layers=layers)


def cross_entropy(model: torch.nn.Module, labels) -> Objective:
    """The cross-entropy of ``labels`` (one class index, or one per image), summed over the batch:
    minimise it to make the model predict ``labels`` (a targeted attack), minimise
    ``-cross_entropy`` to push it away from them (an untargeted attack such as PGD)."""
    validation.validate_model(model)
    one_per_image = isinstance(labels, (list, tuple)) or getattr(labels, "ndim", 0) > 0
    count = len(labels) if one_per_image else 1
    targets = validation.class_indices(labels, count, classes=validation.num_classes(model), what="labels")

    def loss(features):
        scores = features[MODEL_OUTPUT]
        index = targets.to(scores.device)
        if index.numel() != scores.shape[0]:
            if index.numel() != 1:
                raise ValueError(f"{index.numel()} labels for a batch of {scores.shape[0]} images")
            index = index.expand(scores.shape[0])
        return F.cross_entropy(scores, index, reduction="sum")

    return Objective(loss, "cross-entropy", model=model, layers=[MODEL_OUTPUT])


def total_variation(weight: float = 1.0, beta: float = 2.0) -> Objective:
    """``tv_loss(x, weight, beta)`` of the image the objective sees (:func:`cs_utils.tv_loss`)."""
    return Objective(lambda x: tv_loss(x, weight=weight, beta=beta), f"{weight:g} * TV")


def diversity(model: torch.nn.Module, layer: str, *, facets: int | None = None) -> Objective:
    """The mean pairwise cosine similarity of the images' Gram matrices at ``layer`` (Lucent's
    ``diversity``, Olah et al. 2017): add ``weight * diversity(...)`` to another objective and the
    images of the batch must excite it in different ways (multifaceted visualization; Nguyen,
    Yosinski & Clune 2016). Each image's Gram matrix ``F F^T`` (channels x channels) is flattened and
    normalised; the value is in [-1, 1] (in [0, 1] after a ReLU), 1 when all images have the same
    style. ``facets``: the number of images when the batch holds several views of each
    (crop-major, as :class:`cs_utils.transforms.RandomCrops` returns them); the Gram matrices of the
    views of one image are averaged. Needs at least two images."""
    validation.validate_layer(model, layer)
    if facets is not None and (isinstance(facets, bool) or not isinstance(facets, int) or facets < 2):
        raise ValueError(f"facets must be an int >= 2 (images that should differ), got {facets!r}")

    def loss(features):
        out = features[layer]
        if out.dim() != 4:
            raise ValueError(f"diversity needs a spatial layer (N, C, H, W); {layer!r} gives "
                             f"{tuple(out.shape)}")
        n = out.shape[0] if facets is None else facets
        if n < 2 or out.shape[0] % n:
            raise ValueError(f"diversity needs at least 2 images and a batch that is a multiple of "
                             f"facets; got a batch of {out.shape[0]} for {n} facets")
        flat = out.flatten(2)
        grams = (flat @ flat.transpose(1, 2)).flatten(1)
        grams = grams.reshape(-1, n, grams.shape[1]).mean(dim=0)            # average the views
        grams = F.normalize(grams, dim=1)
        similarity = grams @ grams.T
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)
        return similarity[off_diagonal].mean()

    return Objective(loss, f"{layer} diversity", model=model, layers=[layer])
