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

import torch
import torch.nn.functional as F
from torch import nn

from . import objectives, validation
from .activating_patches import crop_patches, top_activations
from .class_viz import class_visualization
from .hooks import evaluating, extract_features
from .objectives import Objective
from .receptive_fields import receptive_field
from .regularizers import CenterBias
from .validation import model_input, validate_image

__all__ = [
    "DIVERSITY",
    "DIVERSITY_LAYER",
    "KEEP_CLASS",
    "TOUR_RECIPE",
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
DIVERSITY = 150.0
KEEP_CLASS = 10.0
#: The recipe of :func:`layer_tour`'s channel images: "natural", not the class images' default
#: "smooth_color", which caps how colourful an image can be. Early channels are colour filters:
#: with "smooth_color" Lite0's stem channels 3, 10, 21 reached mean activations 0.88, 2.86, 4.52 at
#: 160 px and 128 steps, with "natural" 2.65, 3.93, 4.35 (the best photo crops: 1.4, 3.9, 3.1).
TOUR_RECIPE = "natural"


def multifaceted_visualization(model: nn.Module, target, facets: int = 4, *, diversity: float = DIVERSITY,
                               diversity_layer: str = DIVERSITY_LAYER, keep_class: float = KEEP_CLASS,
                               center_bias: float = 0.0, generator: torch.Generator | None = None,
                               **settings):
    """``facets`` images that each maximise ``target`` (a class index or an objective) for ``model``
    and differ from each other: the objective is ``target + diversity * diversity_term``, with the
    mean pairwise similarity of the images' Gram matrices at ``diversity_layer`` as the term
    (``diversity=0``: the same batch without it).

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
    if "batch" in settings:
        raise TypeError("give the number of images as facets=..., not batch=...")
    if isinstance(target, Objective):
        goal = target
    else:
        goal = objectives.class_score(model, target)
        if keep_class:
            goal = goal + keep_class * objectives.cross_entropy(model, target)
    objective = goal + diversity * objectives.diversity(model, diversity_layer) if diversity else goal
    regularizers = list(settings.pop("regularizers", []))
    if center_bias:
        regularizers.append(CenterBias(center_bias))
    return class_visualization(model, objective, batch=facets, generator=generator,
                               regularizers=regularizers, **settings)


def mean_pairwise_cosine(model: nn.Module, images: torch.Tensor, layer: str = "pool") -> float:
    """The mean cosine similarity over all pairs of ``images`` of their ``layer`` features (default the
    penultimate ``pool`` features): 1 when the network sees them all alike."""
    x = model_input(model, images, "images")
    if x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 images, got {x.shape[0]}")
    validation.validate_layer(model, layer)
    with torch.no_grad(), evaluating(model):
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
    layers whose field is larger than the crops, the whole crop is the patch. The channel images use
    :data:`TOUR_RECIPE` unless ``recipe=`` is given."""
    validate_image(photos, "photos")
    settings.setdefault("recipe", TOUR_RECIPE)
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
