"""Neural texture synthesis and style transfer (Gatys et al. 2015, 2016), and the style images.

* :func:`synthesize_texture`: start from noise and match the Gram matrices
  ``G_l = F_l F_l^T / (C_l H_l W_l)`` of a texture at a few layers,
  ``L = sum_l w_l mean((G_l(x) - A_l)^2)`` (Gatys et al. 2015).
* :func:`style_transfer`: ``L = style_weight * (L_gram + moment_weight * L_moments)
  + content_weight * L_content + tv_weight * TV(x)`` (Gatys et al. 2016). By default every
  term is a relative error, so that each layer counts alike: layer ``l``'s Gram error is divided
  by the mean square of its target, ``mean((G_l - A_l)^2) / mean(A_l^2)``
  (:func:`normalized_layer_weights`), the content error by the target's,
  ``||F(x) - F(c)||^2 / ||F(c)||^2``, and :func:`moment_loss` matches the mean and standard
  deviation of every channel, at the style layers and of the pixels' colours: a Gram matrix
  alone does not carry a style's brightness (Hubble's black sky came out grey without it).
* :func:`style_targets` computes a style's Gram matrices once (no gradient);
  :func:`mix_styles` blends styles by a weighted sum of their Gram matrices.

Both optimisations are :func:`cs_utils.optimize_image` with an objective built from
:mod:`cs_utils.objectives` (``gram_match``, plus ``feature_match`` for the content); the
terms share one forward pass that stops after the deepest layer used
(:func:`cs_utils.extract_features`), so nothing after it is ever computed. They run on
:func:`cs_utils.engine.folding.gradient_network` of the model (batch norm folded into the convolutions,
channels-last weights: the same function with fewer layers to run backward through; made once per
model and reused while its weights stay the same),
and the Gram terms use :func:`cs_utils.engine.gram.gram_losses` (a written-out backward).

The style images live in :mod:`cs_utils.style_catalog`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import objectives
from .engine.folding import gradient_network
from .history import History
from .hooks import evaluating, extract_features, get_layer
from .losses import gram_matrix, style_loss
from .models import CONTENT_LAYER, STYLE_LAYERS, has_same_padding, reflect_pad
from .optimize import optimize_image
from .regularizers import TVPenalty
from .runtime import model_device
from .validation import model_dtype, model_input, non_negative_int, validate_image, validate_layer

__all__ = [
    "StyleTargets",
    "channel_moments",
    "mix_styles",
    "moment_loss",
    "noise_image",
    "normalized_layer_weights",
    "style_distance",
    "style_targets",
    "style_transfer",
    "synthesize_texture",
]

#: :func:`style_transfer`'s default style weight and TV weight (with its relative losses).
STYLE_WEIGHT = 10.0
TV_WEIGHT = 0.001
#: Pixels of mirrored content around the canvas :func:`style_transfer` optimises (its centre is
#: returned): the outermost pixels of an optimised image collect a dotted line.
STYLE_MARGIN = 8

# ----------------------------------------------------------------------------- Gram targets

def _check_layers(model, layers, what="layers") -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    if not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"{what} must be a non-empty list of layer names such as {list(STYLE_LAYERS)}, "
                         f"got {layers!r}")
    layers = tuple(layers)
    for name in layers:
        get_layer(model, name)  # KeyError listing close names
    if len(set(layers)) != len(layers):
        raise ValueError(f"{what} lists a layer twice: {list(layers)}")
    return layers


@dataclass(frozen=True)
class StyleTargets:
    """The Gram matrices ``grams[i]`` (1, C_i, C_i) of a style at ``layers[i]``, computed once.

    ``moments`` (optional): ``(mean, std)`` of every channel at ``layers[i]`` (each (1, C_i)),
    then the same for the image's three colour channels, ``len(layers) + 1`` pairs
    (:func:`channel_moments`); what :func:`style_transfer`'s ``moment_weight`` matches.
    """

    layers: tuple[str, ...]
    grams: tuple[torch.Tensor, ...]
    moments: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None

    def __post_init__(self):
        if len(self.layers) != len(self.grams):
            raise ValueError(f"{len(self.layers)} layers but {len(self.grams)} Gram matrices")
        if self.moments is not None and len(self.moments) != len(self.layers) + 1:
            raise ValueError(f"give one (mean, std) pair per layer and one for the colours: "
                             f"{len(self.layers) + 1} pairs, got {len(self.moments)}")


def channel_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation (over the positions, ``1/(HW)``) of every channel of
    ``features`` (N, C, H, W): two (N, C) tensors. On an image, its colour channels' statistics."""
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise ValueError(f"features must be a tensor of shape (N, C, H, W), got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    flat = features.flatten(2)
    mean = flat.mean(dim=2)
    # sqrt of the variance with a floor: finite gradient where a channel is constant
    std = (flat - mean[..., None]).pow(2).mean(dim=2).add(1e-8).sqrt()
    return mean, std


def moment_loss(features: Sequence[torch.Tensor], targets: Sequence[tuple[torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
    """``sum_i (mean((mu_i - m_i)^2) + mean((s_i - t_i)^2)) / (mean(m_i^2) + mean(t_i^2))``: the
    relative squared error of the channel means ``mu_i`` and standard deviations ``s_i`` of
    ``features[i]`` (:func:`channel_moments`) against ``targets[i] = (m_i, t_i)``, (1, C_i) or
    (N, C_i) each; the means run over the images and channels."""
    features, targets = list(features), list(targets)
    if not features or len(features) != len(targets):
        raise ValueError(f"give one (mean, std) target per feature map: {len(features)} feature maps, "
                         f"{len(targets)} targets")
    loss = features[0].new_zeros(())
    for i, (f, (m, t)) in enumerate(zip(features, targets)):
        mu, s = channel_moments(f)
        if m.shape[-1] != mu.shape[-1] or t.shape[-1] != s.shape[-1]:
            raise ValueError(f"targets[{i}] has {m.shape[-1]} channels but features[{i}] has {mu.shape[-1]}")
        scale = (m.pow(2).mean() + t.pow(2).mean()).clamp_min(1e-12)
        loss = loss + ((mu - m).pow(2).mean() + (s - t).pow(2).mean()) / scale
    return loss


def normalized_layer_weights(targets: StyleTargets, layer_weights: float | Sequence[float] = 1.0
                             ) -> list[float]:
    """``layer_weights[l] / mean(A_l^2)`` for each target Gram matrix ``A_l``: with these weights
    :func:`cs_utils.style_loss` sums each layer's Gram error relative to its target's size, so
    every layer counts alike (unweighted, the layers with the largest Gram entries, the stem's
    colours on EfficientNet-Lite, decide the result: a tint)."""
    if not isinstance(targets, StyleTargets):
        raise TypeError(f"targets must be StyleTargets from style_targets(...), got {type(targets).__name__}")
    count = len(targets.grams)
    weights = [float(layer_weights)] * count if isinstance(layer_weights, (int, float)) else \
        [float(w) for w in layer_weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} layer weights for {count} style layers")
    scales = [float(a.detach().pow(2).mean()) for a in targets.grams]
    if min(scales) <= 0:
        raise ValueError("a target Gram matrix is all zeros (a black image?); it cannot be normalised")
    return [w / scale for w, scale in zip(weights, scales)]


def style_targets(model, style: torch.Tensor, layers=STYLE_LAYERS, *, mirror: bool = True) -> StyleTargets:
    """The (normalised) Gram matrices of ``style`` (1, 3, H, W) at ``layers``, without gradient.

    The style image may have any size: a Gram matrix is C x C whatever H and W are,
    and resizing the style image changes which scale of its brush strokes the layers see.
    ``mirror`` (default): mirror-pad the image to a size the network's "SAME" padding treats
    symmetrically (:func:`cs_utils.models.reflect_pad`), as :func:`style_transfer` does;
    ``mirror=False``: the plain forward pass, as :func:`cs_utils.train_fast_style`'s loss sees it.
    """
    layers = _check_layers(model, layers)
    validate_image(style, "style")
    if style.shape[0] != 1:
        raise ValueError(f"style must be one image (1, 3, H, W), got a batch of {style.shape[0]}; "
                         "blend several styles with mix_styles")
    image = model_input(model, style, "style")
    with torch.no_grad(), evaluating(model):
        padded = reflect_pad(image, 0, same_padding=mirror and has_same_padding(model))
        feats = extract_features(model, padded, layers)
        moments = (*(channel_moments(feats[name]) for name in layers), channel_moments(image))
    return StyleTargets(layers, tuple(gram_matrix(feats[name]) for name in layers), moments)


def mix_styles(targets: Sequence[StyleTargets], weights: Sequence[float]) -> StyleTargets:
    """A blend of styles: ``sum_k weights[k] * targets[k].grams[l]`` at every layer ``l``.

    Weights summing to 1 keep the blend's Gram matrices on the scale of a single style's.
    The channel means and standard deviations (``moments``) are blended with the same weights.
    """
    targets, weights = list(targets), [float(w) for w in weights]
    if not targets or len(targets) != len(weights):
        raise ValueError(f"give one weight per style: {len(targets)} styles, {len(weights)} weights")
    layers = targets[0].layers
    for t in targets:
        if not isinstance(t, StyleTargets):
            raise TypeError(f"mix_styles takes StyleTargets from style_targets(...), got {type(t).__name__}")
        if t.layers != layers:
            raise ValueError(f"every style must use the same layers; got {list(layers)} and {list(t.layers)}")
    ### BEGIN SOLUTION
    grams = tuple(sum(w * t.grams[i] for w, t in zip(weights, targets)) for i in range(len(layers)))
    ### END SOLUTION
    return StyleTargets(layers, grams, _mixed_moments(targets, weights))


def _mixed_moments(targets, weights):
    """The same blend of the channel means and standard deviations (None if a style has none)."""
    if any(t.moments is None for t in targets):
        return None
    return tuple(tuple(sum(w * t.moments[i][k] for w, t in zip(weights, targets)) for k in (0, 1))
                 for i in range(len(targets[0].moments)))


def style_distance(model, image: torch.Tensor, targets: StyleTargets,
                   layer_weights: float | Sequence[float] = 1.0, *, mirror: bool = True) -> float:
    """How far ``image``'s Gram matrices are from ``targets``: the style loss, without gradient.

    Measures results against a style on the same scale as the optimisation's Gram loss,
    e.g. to compare outputs made with different layers or style weights. ``mirror`` as in
    :func:`style_targets` (use the same setting for both).
    """
    validate_image(image, "image")
    if not isinstance(targets, StyleTargets):
        raise TypeError(f"targets must be StyleTargets from style_targets(...), got {type(targets).__name__}")
    with torch.no_grad(), evaluating(model):
        feats = extract_features(model, reflect_pad(model_input(model, image, "image"), 0,
                                                    same_padding=mirror and has_same_padding(model)),
                                 list(targets.layers))
        return float(style_loss([feats[name] for name in targets.layers], list(targets.grams), layer_weights))


def noise_image(shape, *, mean: float = 0.5, std: float = 0.1, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """Grey Gaussian noise ``mean + std * randn`` clamped to [0, 1]: the start of a texture synthesis."""
    return (mean + std * torch.randn(*shape, generator=generator)).clamp(0, 1).to(device)


# ----------------------------------------------------------------------------- optimisations

def _as_targets(model, style, layers) -> StyleTargets:
    if isinstance(style, StyleTargets):
        if layers is not None and tuple(layers) != style.layers:
            raise ValueError(f"the style targets were computed at {list(style.layers)}, not at "
                             f"{list(layers)}; compute them with style_targets(model, image, layers)")
        _check_layers(model, style.layers, "style layers")
        return style
    return style_targets(model, style, STYLE_LAYERS if layers is None else layers)




def _moment_term(net, targets: StyleTargets) -> objectives.Objective:
    """:func:`moment_loss` at the style layers (one objective reading the network) plus that of the
    image's colours (what the network sees, mirrored borders included), tracked as "moments"."""
    if targets.moments is None:
        raise ValueError("these style targets have no channel moments (StyleTargets built by hand?); "
                         "compute them with style_targets(model, image) or pass moment_weight=0")
    layers, feature_targets, colours = targets.layers, targets.moments[:-1], targets.moments[-1]
    features = objectives.Objective(
        lambda f: moment_loss([f[name] for name in layers], feature_targets), "channel moments",
        model=net, layers=layers).track("moments")
    pixels = objectives.Objective(lambda x: moment_loss([x], [colours]), "colour moments").track("moments")
    return features + pixels


class _Mirror:
    """Mirror ``pad`` pixels at each border before the network sees the image (and, for
    "SAME"-padded networks, up to an odd size; see :func:`_reflect`)."""

    def __init__(self, pad: int, odd: bool):
        self.pad, self.odd = pad, odd

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return reflect_pad(x, self.pad, same_padding=self.odd)


def _run(model, objective, init, *, pad, steps, optimizer, lr, tv_weight, generator, progress, desc,
         callback) -> tuple[torch.Tensor, History]:
    """``objective`` on :func:`optimize_image` with a TV penalty on the pixels. The network sees
    them clamped to [0, 1] (L-BFGS moves pixels freely between evaluations) and mirrored at the
    borders."""
    regularizers = [TVPenalty(tv_weight)] if tv_weight else []
    # No Clamp transform: the loop already shows the network pixels in [0, 1] (clamped after every
    # first-order step; clamped straight through at every L-BFGS evaluation).
    with evaluating(model):
        return optimize_image(objective, init, steps=steps, optimizer=optimizer, lr=lr,
                              clamp=(0.0, 1.0), transforms=[_Mirror(pad, has_same_padding(model))],
                              regularizers=regularizers, generator=generator, progress=progress,
                              desc=desc, callback=callback)


def synthesize_texture(model, texture: torch.Tensor, layers=None, *, size=None, steps: int = 300,
                       optimizer="lbfgs", lr: float | None = None, tv_weight: float = 1e-5,
                       layer_weights: float | Sequence[float] = 1.0, init: torch.Tensor | None = None,
                       pad: int = 0, margin: int = 16, generator: torch.Generator | None = None,
                       progress: bool = True, callback=None) -> tuple[torch.Tensor, History]:
    """Gram-matrix texture synthesis (Gatys et al. 2015): optimise noise until its Gram
    matrices at ``layers`` match the texture's.

    ``texture``: (1, 3, H, W) in [0, 1], or :class:`StyleTargets` (e.g. a :func:`mix_styles`
    blend). ``layers``: default :data:`STYLE_LAYERS` (or the precomputed targets' layers).
    ``size``: output side or ``(height, width)``; default the texture's size.
    ``init``: starting image (default grey noise drawn from ``generator``). ``pad``: pixels
    mirrored at each border before the network sees the image (default 0; the margin below
    already keeps the border out of the result).
    ``margin``: when starting from noise, a canvas ``margin`` pixels larger on every side is
    synthesised and its centre returned: border pixels take part in fewer windows and come
    out as a darker band, which the crop removes.
    ``steps``: optimiser steps (objective evaluations for ``"lbfgs"``).
    Returns ``(image, history)``; ``history.extra["style"]`` holds the Gram loss per evaluation.
    """
    margin = non_negative_int(margin, "margin")
    device = model_device(model)
    targets = _as_targets(model, texture, layers)
    if init is None:
        if size is None:
            if isinstance(texture, StyleTargets):
                raise ValueError("give size= when the texture is given as StyleTargets")
            size = tuple(texture.shape[-2:])
        size = (size, size) if isinstance(size, int) else tuple(size)
        init = noise_image((1, 3, size[0] + 2 * margin, size[1] + 2 * margin), generator=generator,
                           device=device)
        out_device = texture.device if isinstance(texture, torch.Tensor) else device
    else:
        validate_image(init, "init")
        out_device = init.device
        margin = 0
    net = gradient_network(model, keep=targets.layers)
    objective = objectives.gram_match(net, targets.layers, targets.grams, layer_weights).track("style")
    image, history = _run(net, objective, init.to(device, model_dtype(model)),
                          pad=non_negative_int(pad, "pad"), steps=steps, optimizer=optimizer, lr=lr,
                          tv_weight=tv_weight, generator=generator, progress=progress, desc="texture",
                          callback=callback)
    if margin:
        image = image[..., margin:image.shape[-2] - margin, margin:image.shape[-1] - margin]
    out_dtype = texture.dtype if isinstance(texture, torch.Tensor) else image.dtype
    return image.to(out_device, out_dtype), history


def style_transfer(model, content: torch.Tensor, style, *, style_layers=None,
                   content_layer: str = CONTENT_LAYER, style_weight: float = STYLE_WEIGHT,
                   content_weight: float = 1.0, tv_weight: float = TV_WEIGHT,
                   layer_weights: float | Sequence[float] = 1.0, normalize: bool = True,
                   moment_weight: float = 1.0, steps: int = 200, optimizer="lbfgs",
                   lr: float | None = None, init="content", pad: int = 0, margin: int = STYLE_MARGIN,
                   generator: torch.Generator | None = None, progress: bool = True, callback=None
                   ) -> tuple[torch.Tensor, History]:
    """Neural style transfer (Gatys et al. 2016): repaint ``content`` in the style of ``style``.

    Minimises ``style_weight * (L_gram + moment_weight * L_moments) + content_weight * L_content
    + tv_weight * TV(x)``, with, by default (``normalize=True``), relative errors:

    * ``L_gram = sum_l w_l mean((G_l(x) - A_l)^2) / mean(A_l^2)`` (``w_l``: ``layer_weights``;
      :func:`cs_utils.style_loss` with :func:`normalized_layer_weights`);
    * ``L_moments``: :func:`moment_loss` of the channel means and standard deviations at the
      style layers and of the pixels' colours (``moment_weight=0`` leaves it out);
    * ``L_content = ||F(x) - F(content)||^2 / ||F(content)||^2`` at ``content_layer``;
    * ``TV``: :func:`cs_utils.tv_loss`, summed over the pixels.

    ``normalize=False`` is the unweighted first recipe, ``L_gram = sum_l w_l mean((G_l - A_l)^2)``
    and ``L_content = mean((F(x) - F(content))^2)`` (no moments unless ``moment_weight`` is
    given): the stem's large Gram entries then outweigh the deeper layers, and the photo takes
    the painting's colours long before its strokes.

    ``content``: (N, 3, H, W) in [0, 1]. ``style``: a (1, 3, h, w) image of any size, or
    :class:`StyleTargets` (precomputed, or a :func:`mix_styles` blend), Gram matrices
    computed once either way. ``style_layers``: default :data:`STYLE_LAYERS` (or the
    precomputed targets' layers). ``init``: ``"content"`` (default, converges fastest),
    ``"noise"`` (grey noise from ``generator``; needs a larger ``content_weight``) or an image.
    ``optimizer``: ``"lbfgs"`` (``steps`` counts evaluations) or ``"adam"`` (e.g. ``lr=0.02``).
    ``pad``: pixels mirrored at each border before the network sees the image (the content
    target is computed the same way). For "SAME"-padded networks the image is always mirrored
    up to the next ``16k + 1`` size at the bottom and right, which is what keeps the borders
    free of dots; the default 0 adds nothing more. A wider mirror makes the borders busier,
    not cleaner: a mirrored pixel is seen twice and takes twice the step, and every mirrored
    pixel costs time at every evaluation (``benchmarks/README.md`` has the numbers).
    ``margin``: the canvas optimised is ``margin`` pixels larger on every side, the content (and an
    ``init`` image) mirrored into it, and its centre is returned; the losses cover the whole canvas.
    Without it (``margin=0``) the last column and row of a 256-px transfer hold a dotted line (9-11x
    the interior's Laplacian energy, 1.1x with the default 8).
    Returns ``(image, history)``: ``history.extra`` has ``"style"`` (``L_gram``), ``"content"``
    (``L_content``) and, with moments, ``"moments"`` per evaluation.
    """
    validate_image(content, "content")
    pad, margin = non_negative_int(pad, "pad"), non_negative_int(margin, "margin")
    device = model_device(model)
    for name, value in (("style_weight", style_weight), ("content_weight", content_weight),
                        ("tv_weight", tv_weight), ("moment_weight", moment_weight)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    if not isinstance(content_layer, str):
        raise TypeError(f"content_layer must be one layer name such as {CONTENT_LAYER!r}, "
                        f"got {content_layer!r}")
    validate_layer(model, content_layer)
    targets = _as_targets(model, style, style_layers)
    content_dev = reflect_pad(model_input(model, content, "content"), margin)    # the canvas
    net = gradient_network(model, keep=(*targets.layers, content_layer))
    with torch.no_grad(), evaluating(net):
        padded = reflect_pad(content_dev, pad, same_padding=has_same_padding(net))
        content_target = extract_features(net, padded, [content_layer])[content_layer]
    if isinstance(init, str):
        if init == "content":
            init = content_dev
        elif init == "noise":
            init = noise_image(content_dev.shape, generator=generator, device=device).to(content_dev.dtype)
        else:
            raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}")
    else:
        validate_image(init, "init")
        if init.shape != content.shape:
            raise ValueError(f"init has shape {tuple(init.shape)} but content has {tuple(content.shape)}")
        init = reflect_pad(model_input(model, init, "init"), margin)
    # Every term reads one forward pass, stopped after the deepest of their layers.
    if normalize:
        layer_weights = normalized_layer_weights(targets, layer_weights)
        content_scale = 1.0 / content_target.pow(2).sum().clamp_min(1e-12).item()
    else:
        content_scale = 1.0 / content_target.numel()
    style_term = objectives.gram_match(net, targets.layers, targets.grams, layer_weights).track("style")
    content_term = objectives.feature_match(net, content_layer, content_target,
                                            weight=content_scale).track("content")
    objective = style_weight * style_term + content_weight * content_term
    if moment_weight:
        objective = objective + (style_weight * moment_weight) * _moment_term(net, targets)
    image, history = _run(net, objective, init, pad=pad, steps=steps, optimizer=optimizer, lr=lr,
                          tv_weight=tv_weight, generator=generator, progress=progress,
                          desc="style transfer", callback=callback)
    image = image[..., margin:image.shape[-2] - margin, margin:image.shape[-1] - margin]
    return image.to(content.device, content.dtype).contiguous(), history   # not a view of the canvas
