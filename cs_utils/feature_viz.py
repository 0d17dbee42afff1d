"""Feature visualization beyond one image per class: facets of a class or unit, and a tour of the layers.

* :func:`multifaceted_visualization`: a batch of images that each excite one class or unit
  but differ from each other, through a diversity term on the batch (the Gram matrices of an
  intermediate layer, :func:`cs_utils.objectives.diversity`; Nguyen, Yosinski & Clune 2016;
  Olah et al. 2017), optionally with a center bias (:class:`cs_utils.regularizers.CenterBias`);
* :func:`mean_pairwise_cosine`: how alike a batch of images is for a network (the mean cosine
  similarity of their penultimate features): the number that says the facets differ;
* :func:`layer_tour`: channel visualizations at several depths, each with the real photo patches
  that excite the channel most (:mod:`cs_utils.activating_patches`).

All of them are thin layers over :func:`cs_utils.class_visualization`, i.e. the one optimisation
loop :func:`cs_utils.optimize.optimize_image`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from . import objectives, validation
from .activating_patches import crop_patches, top_activations
from .class_viz import DEFAULT_RECIPE, RECIPE_STEPS, class_visualization
from .hooks import evaluating, extract_features
from .objectives import Objective
from .optimize import switch_off_after
from .receptive_fields import receptive_field
from .regularizers import CenterBias
from .validation import model_input, validate_image

__all__ = [
    "DIVERSITY",
    "DIVERSITY_LAYER",
    "DIVERSITY_SHARE",
    "KEEP_CLASS",
    "LayerTour",
    "layer_tour",
    "mean_pairwise_cosine",
    "multifaceted_visualization",
]

#: The layer whose Gram matrices the diversity term compares (parts and object-level patterns).
DIVERSITY_LAYER = "blocks.12"
#: The diversity term's default weight, and that of the class's cross-entropy for a class target:
#: the diversity term alone pushes facets into other classes, the cross-entropy keeps them in the
#: class (the measurement is in notebook 03 and ``benchmarks/README.md``).
#: The term acts for the first ``DIVERSITY_SHARE`` of the steps only: it sets each facet's layout early,
#: then every facet is refined on the class alone (at 160 px, 256 steps on seven classes: 28 of 28
#: facets in Lite2's top 3 with the term at 300 for half the steps, against 24 of 28 in the top 5 with
#: 150 throughout, some at ranks 14-17; 300 throughout or 600 for half pushed facets to ranks 36-354).
DIVERSITY = 300.0
DIVERSITY_SHARE = 0.5
KEEP_CLASS = 10.0


def multifaceted_visualization(model: nn.Module, target, facets: int = 4, *, diversity: float = DIVERSITY,
                               diversity_layer: str = DIVERSITY_LAYER,
                               diversity_share: float = DIVERSITY_SHARE, keep_class: float = KEEP_CLASS,
                               center_bias: float = 0.0,
                               generator: torch.Generator | None = None, **settings):
    """``facets`` images that each maximise ``target`` (a class index or an objective) for ``model``
    and differ from each other: the objective is ``target + diversity * diversity_term``, with the
    mean pairwise similarity of the images' Gram matrices at ``diversity_layer`` as the term
    (``diversity=0``: the same batch without it). The term acts during the first ``diversity_share``
    of the steps (1: all of them); the rest refine each facet on ``target`` alone, so a facet the
    term pushed towards another class comes back while keeping its own layout.

    For a class index, ``keep_class`` times the class's cross-entropy is added too: the diversity
    term alone can push a facet into another class (its score stays high while another's rises
    faster), the cross-entropy keeps every facet the class. ``center_bias > 0`` adds a
    :class:`~cs_utils.regularizers.CenterBias` penalty of that weight. ``settings`` go to
    :func:`cs_utils.class_visualization` (``steps``, ``recipe``, ``image_size``, ...).
    Returns ``(images, History)``; ``images`` is ``(facets, 3, H, W)``."""
    facets = validation.positive_int(facets, "facets")
    if facets < 2:
        raise ValueError(f"facets must be at least 2 (images that differ), got {facets}")
    for name, value in (("diversity", diversity), ("keep_class", keep_class), ("center_bias", center_bias)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if isinstance(diversity_share, bool) or not isinstance(diversity_share, numbers.Real) \
            or not 0 <= diversity_share <= 1:
        raise ValueError(f"diversity_share must be a number in [0, 1] (the share of the steps with the "
                         f"diversity term), got {diversity_share!r}")
    if "batch" in settings:
        raise TypeError("give the number of images as facets=..., not batch=...")
    if isinstance(target, Objective):
        goal = target
    else:
        goal = objectives.class_score(model, target)
        if keep_class:
            goal = goal + keep_class * objectives.cross_entropy(model, target)
    # (an unknown recipe counts 0 steps here; class_visualization then says which recipes exist)
    steps = settings.get("steps") or RECIPE_STEPS.get(settings.get("recipe", DEFAULT_RECIPE), 0)
    on_steps = round(diversity_share * steps) if diversity else 0
    objective = goal
    if on_steps:
        term = objectives.diversity(model, diversity_layer)
        if on_steps < steps:
            term, settings["callback"] = _for_first_steps(term, on_steps, settings.get("callback"))
        objective = goal + diversity * term
    regularizers = list(settings.pop("regularizers", []))
    if center_bias:
        regularizers.append(CenterBias(center_bias))
    return class_visualization(model, objective, batch=facets, generator=generator,
                               regularizers=regularizers, **settings)


def _for_first_steps(term: Objective, steps: int, callback=None):
    """``(objective, callback)``: ``term`` while fewer than ``steps`` steps are done, zero after (not
    evaluated); the callback (:func:`cs_utils.optimize.switch_off_after`) counts the steps."""
    switch = SimpleNamespace(enabled=True)

    def value(features):
        return term.fn(features) if switch.enabled else features[term.layers[0]].new_zeros(())

    return (Objective(value, term.name, model=term.model, layers=term.layers),
            switch_off_after(switch, steps, callback))


def mean_pairwise_cosine(model: nn.Module, images: torch.Tensor, layer: str = "pool", *,
                         gram: bool = False) -> float:
    """The mean cosine similarity over all pairs of ``images`` of their ``layer`` features (default the
    penultimate ``pool`` features): 1 when the network sees them all alike. ``gram=True`` compares
    the layer's Gram matrices (channels x channels, positions summed out) instead: what the diversity
    term of :func:`multifaceted_visualization` measures at :data:`DIVERSITY_LAYER`."""
    x = model_input(model, images, "images")
    if x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 images, got {x.shape[0]}")
    validation.validate_layer(model, layer)
    with torch.no_grad(), evaluating(model):
        if gram:                  # the diversity term's value is this mean
            return float(objectives.diversity(model, layer)(x))
        features = extract_features(model, x, [layer])[layer].flatten(1).float()
    unit = F.normalize(features, dim=1)
    similarity = unit @ unit.T
    off_diagonal = ~torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    return float(similarity[off_diagonal].mean())


@dataclass(frozen=True)
class LayerTour:
    """:func:`layer_tour`'s result: per layer, the channels, their visualizations ``(C, 3, H, W)``,
    the receptive-field patches of their top-``k`` photo crops ``(C, k, 3, h, w)`` and those
    activations ``(C, k)``."""

    channels: dict[str, tuple[int, ...]]
    visualizations: dict[str, torch.Tensor]
    patches: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]


def layer_tour(model: nn.Module, channels: dict[str, list[int]], photos: torch.Tensor, *, k: int = 4,
               groups=None, generator: torch.Generator | None = None, progress: bool = True,
               **settings) -> LayerTour:
    """For each ``layer: [channel, ...]`` of ``channels``: one visualization per channel (one batch
    per layer, image ``i`` maximising channel ``i``; ``settings`` go to
    :func:`cs_utils.class_visualization`) and the receptive-field patches of the ``k`` photo crops
    ``photos`` (N, 3, H, W) that excite the channel most (at most one per photo, or per ``groups``
    id), as in notebook 01. Where a field reaches past a crop's border, its patch is grey; for
    layers whose field is larger than the crops, the whole crop is the patch."""
    validate_image(photos, "photos")
    if not isinstance(channels, dict) or not channels:
        raise ValueError("channels must be a dict {layer: [channel, ...]} with at least one layer")
    visualizations, patches, activations, chosen = {}, {}, {}, {}
    for layer, layer_channels in channels.items():
        layer_channels = [int(c) for c in layer_channels]
        if not layer_channels:
            raise ValueError(f"no channels given for layer {layer!r}")
        validation.validate_layer(model, layer)
        objective = objectives.channel(model, layer, layer_channels)
        images, _ = class_visualization(model, objective, batch=len(layer_channels), generator=generator,
                                        progress=progress, **settings)
        field = receptive_field(model, layer, tuple(photos.shape[-2:]))
        inside = all(s <= p for s, p in zip(field.size, photos.shape[-2:]))
        top = top_activations(model, photos, layer, layer_channels, k=k, groups=groups,
                              field=field if inside else None, progress=False)
        visualizations[layer] = images.cpu()
        if inside:
            patches[layer] = crop_patches(photos.cpu(), top, field)
        else:                                   # the field is larger than a crop: show the whole crop
            patches[layer] = photos.cpu()[top.image]
        activations[layer] = top.value
        chosen[layer] = tuple(layer_channels)
    return LayerTour(chosen, visualizations, patches, activations)
