"""A sanity check for feature visualizations: does the network process an image along the path
it takes for natural images of the class?

Geirhos et al. (ICML 2024, "Don't trust your eyes: on the (un)reliability of feature
visualizations") show that a class visualization can reach a high class score along a path
through the network unlike that of natural images of the class: in early and middle layers
it can look less like the class than photos of *other* classes do, and only the last layers
agree. Their sanity check compares, layer by layer, the visualization's activations with
those of natural images of the class and of other classes. Here that is one number per image:

* at each layer, the activation map is averaged over space (a vector per image) and each
  image's cosine distance to the mean vector of the class's reference photos is taken;
* the layer's score is the fraction of the *other* photos that are farther from that mean
  than the image is (a tie counts half): 1.0 = closer to the class than every other photo,
  0.5 = as close as a typical photo of another class, 0 = farther than all of them;
* the image's score is the mean over the layers (:attr:`PathSimilarity.score`); the per-layer
  values (:attr:`PathSimilarity.per_layer`) show where along the path it departs.

Functions:

* :func:`path_similarity`: the scores for given reference and other images (tensors);
* :func:`class_path_similarity`: the same with the offline photos of
  :func:`cs_utils.data.sample_images` (``"photo"``): the references are the labelled photos
  of the class, or, for a class without one, the ``k`` photos the network scores highest for
  the class (the paper's "dataset examples"); the others are the remaining photos;
* :func:`path_similarity_controls`: what high and low mean, on one set of references: a
  held-out photo of the class (leave-one-out), uniform noise, and a photo of another class
  turned into the class by a targeted PGD attack (high score at the last layers only);
* :func:`plot_path_similarity`: the per-layer values of several results, one line each.

With only the 32 offline photos the scores move in steps of about 1/30, and one reference
photo stands for a whole class: read them as a sanity check, not a measurement.

Measured on EfficientNet-Lite0 (default layers, 224 px; class visualizations of 96 steps, seed 0),
against the labelled photo of the class:

==============  =======  =======  ==========================================================
class           natural  fourier  per layer (natural)
==============  =======  =======  ==========================================================
strawberry      0.52     0.46     0.42 0.26 0.42 0.29 0.32 0.48 | 1.0 1.0
spoonbill       0.58     0.42     1.0 0.97 0.55 0.10 0.00 0.03 | 1.0 1.0
Dalmatian       0.80     0.67     0.94 0.77 0.87 0.74 0.55 0.52 | 1.0 1.0
==============  =======  =======  ==========================================================

Every visualization is closer to the class than every other photo at the last block and the
pooled features, and like a typical other photo (or less) in the middle of the network: the
paper's finding. :func:`path_similarity_controls` for strawberry (references: the network's
top-3 other photos): held-out strawberry photo 0.54, noise 0.35, a photo after a targeted PGD
attack 0.26 (0.0-0.07 up to ``blocks.10``, then 0.93 and 1.0; 0.07 before the attack).

Two choices were measured: centering the vectors on the photos' mean makes noise score like a
typical photo (0.50), so the raw spatial means are compared; and the "dataset examples" of a
class without a labelled photo can be other things the network likes (for strawberry: a pink
flower, a horse chestnut, the Hubble deep field), against which the strawberry visualization
scores 0.95 and noise 1.0 at ``blocks.15``: check ``result.how`` and the references' images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import validation
from .data import imagenet_label, sample_images
from .hooks import evaluating, extract_features
from .models import STYLE_LAYERS
from .validation import model_input, positive_int

__all__ = [
    "PathSimilarity",
    "class_path_similarity",
    "default_layers",
    "layer_vectors",
    "path_similarity",
    "path_similarity_controls",
    "plot_path_similarity",
    "reference_photos",
]

_CONTROLS = ("held-out photo", "noise", "attacked photo", "adversarial")

#: Two cosine distances closer than this are a tie (the same image run in another batch).
TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PathSimilarity:
    """Scores of ``N`` images against one class: ``score`` ``(N,)`` is the mean over ``layers`` of
    ``per_layer`` ``(N, L)``; ``references`` and ``others`` name the images compared with;
    ``how`` says how the references were chosen."""

    layers: tuple[str, ...]
    per_layer: torch.Tensor
    references: tuple[str, ...]
    others: tuple[str, ...]
    how: str = "given"
    target: int | None = None

    @property
    def score(self) -> torch.Tensor:
        return self.per_layer.mean(dim=1)

    def __float__(self) -> float:
        if self.per_layer.shape[0] != 1:
            raise TypeError(f"float() needs one image, these scores are for {self.per_layer.shape[0]}; "
                            "use .score")
        return float(self.score[0])

    def __repr__(self) -> str:
        scores = ", ".join(f"{s:.2f}" for s in self.score.tolist())
        return (f"PathSimilarity(score=[{scores}], layers={len(self.layers)}, "
                f"references={list(self.references)}, others={len(self.others)}, how={self.how!r})")


# --------------------------------------------------------------------------- activations

def default_layers(model: nn.Module) -> tuple[str, ...]:
    """For an EfficientNet-Lite: the stem, the blocks of :data:`cs_utils.models.STYLE_LAYERS` (one or
    two per resolution), the last block and ``"pool"`` (the features the classifier reads)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not hasattr(model, "pool") or not hasattr(model, "stem"):
        raise ValueError(f"no default layers for a {type(model).__name__}; pass layers=[...] (names from "
                         "cs_utils.hooks.layer_names(model), from early to late)")
    last = f"blocks.{len(blocks) - 1}"
    layers = [name for name in STYLE_LAYERS if name != last] + [last, "pool"]
    return validation.validate_layers(model, layers)


def layer_vectors(model: nn.Module, images: torch.Tensor, layers=None, *, size: int | None = None,
                  batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``{layer: (N, C) float64 tensor}``: each image's activations at each layer, averaged over space.

    The images are resized to ``size`` (default: the model's native size, bilinear, antialiased when
    shrinking) and run in eval mode without gradients, ``batch_size`` at a time. The caller's model and
    images are left as they were."""
    validation.validate_model(model)
    layers = default_layers(model) if layers is None else validation.validate_layers(model, layers)
    x = model_input(model, images, "images")
    batch_size = positive_int(batch_size, "batch_size")
    size = positive_int(size if size is not None else int(getattr(model, "native_image_size", x.shape[-1])),
                        "size")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < min(x.shape[-2:])).clamp(0, 1)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad(), evaluating(model):
        for chunk in x.split(batch_size):
            features = extract_features(model, chunk, list(layers))
            for name in layers:
                out = features[name]
                if not isinstance(out, torch.Tensor) or out.dim() < 2:
                    raise ValueError(f"layer {name!r} gives {type(out).__name__} "
                                     f"{tuple(getattr(out, 'shape', ()))}, not (N, C, ...) activations; "
                                     "pick layers whose output is a tensor with channels")
                parts[name].append(out.flatten(2).mean(dim=2).double().cpu() if out.dim() > 2
                                   else out.double().cpu())
    return {name: torch.cat(parts[name]) for name in layers}


def _cosine_distance(vectors: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=1) * center.norm()
    cos = (vectors @ center) / norms.clamp_min(1e-30)
    return torch.where(norms > 0, 1 - cos, torch.ones_like(cos))   # a zero vector points nowhere: 1


def _rank_scores(images: dict, references: dict, others: dict, layers) -> torch.Tensor:
    """(N, L): per layer, the share of ``others`` farther from the references' mean than each image."""
    columns = []
    for name in layers:
        center = references[name].mean(dim=0)
        mine = _cosine_distance(images[name], center)[:, None]         # (N, 1)
        theirs = _cosine_distance(others[name], center)[None, :]       # (1, M)
        tied = (mine - theirs).abs() <= TIE_TOLERANCE
        farther = (theirs > mine) & ~tied
        columns.append((farther.double().sum(dim=1) + 0.5 * tied.double().sum(dim=1)) / theirs.shape[1])
    return torch.stack(columns, dim=1).float()


# --------------------------------------------------------------------------- given images

def _names(names, n: int, prefix: str) -> tuple[str, ...]:
    if names is None:
        return tuple(f"{prefix} {i}" for i in range(n))
    names = tuple(str(name) for name in names)
    if len(names) != n:
        raise ValueError(f"{prefix}_names has {len(names)} names for {n} images; give one per image")
    return names


def path_similarity(model: nn.Module, images: torch.Tensor, references: torch.Tensor, others: torch.Tensor, *,
                    layers=None, size: int | None = None, reference_names=None,
                    other_names=None) -> PathSimilarity:
    """How much each of ``images`` looks like ``references`` (natural images of one class) along the
    network's path, against ``others`` (natural images of other classes): see the module's docstring.

    All three are image batches ``(N, 3, H, W)`` in [0, 1]; ``others`` needs at least 2 images (the
    score is a share of them). ``layers``: from early to late (default :func:`default_layers`).
    An image equal to the only reference scores 1.0 at every layer; one equal to an other photo
    scores the share of the others farther than that photo, plus half of itself."""
    validation.validate_model(model)
    layers = default_layers(model) if layers is None else validation.validate_layers(model, layers)
    for name, batch in (("images", images), ("references", references), ("others", others)):
        validation.validate_image(batch, name)
    if others.shape[0] < 2:
        raise ValueError(f"others has {others.shape[0]} image; the score is the share of other photos "
                         "farther than the image, so give at least 2 (better 20 or more)")
    ref_names = _names(reference_names, references.shape[0], "reference")
    oth_names = _names(other_names, others.shape[0], "other")
    kw = dict(layers=layers, size=size)
    per_layer = _rank_scores(layer_vectors(model, images, **kw), layer_vectors(model, references, **kw),
                             layer_vectors(model, others, **kw), layers)
    return PathSimilarity(tuple(layers), per_layer, ref_names, oth_names)


# --------------------------------------------------------------------------- offline photos

@functools.lru_cache(maxsize=2)
def _photo_batch(size: int) -> torch.Tensor:
    from .image import load_image

    return torch.cat([load_image(s.path, size) for s in sample_images("photo")])


def _photos(size: int):
    """The offline photos and their batch at ``size`` x ``size`` (cached: index it, never change it)."""
    return list(sample_images("photo")), _photo_batch(size)


def _target(model: nn.Module, target) -> int:
    validation.validate_model(model)
    return int(validation.class_indices(target, 1, classes=validation.num_classes(model))[0])


def _size(model: nn.Module, size) -> int:
    return positive_int(size if size is not None else int(getattr(model, "native_image_size", 224)), "size")


def _exclude(exclude, names) -> set[str]:
    if isinstance(exclude, str):
        exclude = [exclude]
    exclude = set(exclude)
    unknown = sorted(exclude - set(names))
    if unknown:
        raise KeyError(f"exclude names {unknown}, which are not offline photos; "
                       "[s.name for s in cs_utils.data.sample_images('photo')] lists them")
    return exclude


def reference_photos(model: nn.Module, target, *, k: int = 3, exclude=(), size: int | None = None):
    """The offline photos that stand for class ``target``: ``(references, others, how)``, two lists of
    photo names and a sentence saying how the references were chosen.

    The references are the photos labelled ``target``; without one, the ``k`` photos that ``model``
    scores highest for ``target`` (the "dataset examples" of Geirhos et al.). The others are every
    remaining photo that is not labelled ``target``. Photos named in ``exclude`` are used for neither."""
    target = _target(model, target)
    k = positive_int(k, "k")
    size = _size(model, size)
    samples, batch = _photos(size)
    names = [s.name for s in samples]
    exclude = _exclude(exclude, names)
    label = imagenet_label(target) if validation.num_classes(model) == 1000 else str(target)
    labelled = [s.name for s in samples if s.label == target and s.name not in exclude]
    if labelled:
        references = labelled
        how = f"labelled {label!r} photos"
    else:
        free = [i for i, s in enumerate(samples) if s.name not in exclude and s.label != target]
        x = model_input(model, batch[free], "photos")
        with torch.no_grad(), evaluating(model):
            scores = torch.cat([model(chunk)[:, target].cpu() for chunk in x.split(16)])
        order = scores.argsort(descending=True)[:k].tolist()
        references = [names[free[i]] for i in order]
        how = (f"no labelled {label!r} photo left: the {len(references)} photos the network scores highest "
               f"for it ({', '.join(f'{names[free[i]]} {scores[i]:.1f}' for i in order)})")
    others = [s.name for s in samples
              if s.name not in exclude and s.name not in references and s.label != target]
    if len(others) < 2:
        raise ValueError(f"only {len(others)} other photos are left; exclude fewer photos or lower k")
    return references, others, how


def class_path_similarity(model: nn.Module, images: torch.Tensor, target, *, k: int = 3, exclude=(),
                          layers=None, size: int | None = None) -> PathSimilarity:
    """:func:`path_similarity` of ``images`` against the offline photos of class ``target``
    (:func:`reference_photos`: its labelled photos, or the ``k`` the network scores highest for it)
    and every other offline photo. ``result.how`` and ``result.references`` say which were used."""
    validation.validate_image(images, "images")
    target = _target(model, target)
    size = _size(model, size)
    references, others, how = reference_photos(model, target, k=k, exclude=exclude, size=size)
    samples, batch = _photos(size)
    index = {s.name: i for i, s in enumerate(samples)}
    result = path_similarity(model, images, batch[[index[n] for n in references]],
                             batch[[index[n] for n in others]], layers=layers, size=size,
                             reference_names=references, other_names=others)
    return PathSimilarity(result.layers, result.per_layer, result.references, result.others, how, target)


def path_similarity_controls(model: nn.Module, target, *, images: dict | None = None, k: int = 3,
                             epsilon: float = 8 / 255, attack_steps: int = 10, layers=None,
                             size: int | None = None, generator: torch.Generator | None = None
                             ) -> dict[str, PathSimilarity]:
    """What high and low mean for class ``target``, all on one set of references and other photos:

    * ``"held-out photo"``: a labelled photo of the class, left out of the references (leave-one-out;
      with a single labelled photo the references become the ``k`` other photos the network scores
      highest for the class; without one, the top-scoring photo is held out): should be high;
    * ``"noise"``: uniform noise in [0, 1] (drawn with ``generator``): should be low;
    * ``"attacked photo"`` and ``"adversarial"``: the other photo least like the class along the path
      (lowest score, left out of the others), before and after a targeted PGD attack (``epsilon``,
      ``attack_steps``) towards the class: a high class score reached along the photo's own path,
      so high at the last layers only;
    * one entry per item of ``images`` (``{"natural": viz, ...}``), scored on the same references.

    Returns ``{name: PathSimilarity}``; ``.how`` says which photos were used and whether the attack
    reached the class."""
    from .adversarial import pgd

    target = _target(model, target)
    size = _size(model, size)
    layers = default_layers(model) if layers is None else validation.validate_layers(model, layers)
    epsilon = validation.pixel_size(epsilon)
    attack_steps = positive_int(attack_steps, "attack_steps")
    if images is not None and not isinstance(images, dict):
        raise TypeError(f"images must be a dict {{name: image batch}}, e.g. {{'natural': viz}}, "
                        f"got {type(images).__name__}")
    images = dict(images or {})
    for name, value in images.items():
        if name in _CONTROLS:
            raise ValueError(f"images[{name!r}] has the name of a control; name it differently")
        validation.validate_image(value, f"images[{name!r}]")
    samples, batch = _photos(size)
    index = {s.name: i for i, s in enumerate(samples)}
    labelled = [s.name for s in samples if s.label == target]
    if labelled:
        held_out, note = labelled[0], f"held out: {labelled[0]} (labelled)"
    else:
        held_out = reference_photos(model, target, k=1, size=size)[0][0]
        note = f"held out: {held_out} (no labelled photo; the network's top-scoring one)"
    references, others, how = reference_photos(model, target, k=k, exclude=[held_out], size=size)
    if len(others) < 3:
        raise ValueError(f"only {len(others)} other photos are left; lower k")

    def vectors(x):
        return layer_vectors(model, x, layers, size=size)

    ref_v = vectors(batch[[index[n] for n in references]])
    oth_v = vectors(batch[[index[n] for n in others]])
    own = _rank_scores(oth_v, ref_v, oth_v, layers).mean(dim=1)      # each other photo among the others
    worst = int(own.argmin())
    source = others.pop(worst)
    keep = [i for i in range(len(others) + 1) if i != worst]
    oth_v = {name: v[keep] for name, v in oth_v.items()}
    x_source = batch[[index[source]]]
    attacked, history = pgd(model, x_source, target, epsilon=epsilon, steps=attack_steps, targeted=True,
                            generator=generator)
    how = (f"{how}; {note}; attacked: {source} (PGD reached the class: {bool(history.success[0])}, "
           f"confidence {float(history.confidence[0]):.2f})")
    controls = {"held-out photo": batch[[index[held_out]]],
                "noise": torch.rand((1, 3, size, size), generator=generator),
                "attacked photo": x_source, "adversarial": attacked.detach().cpu().float().clamp(0, 1),
                **images}
    return {name: PathSimilarity(tuple(layers), _rank_scores(vectors(x), ref_v, oth_v, layers),
                                 tuple(references), tuple(others), how, target)
            for name, x in controls.items()}


def plot_path_similarity(results: dict, *, ax=None, title: str | None = None):
    """One line per ``{name: PathSimilarity}`` (its first image): the score at each layer, from early to
    late, with the 0.5 of a typical other photo dashed. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    if not isinstance(results, dict) or not results or not all(isinstance(r, PathSimilarity)
                                                               for r in results.values()):
        raise TypeError("results must be a non-empty dict {name: PathSimilarity}, e.g. the output of "
                        "path_similarity_controls(...)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8.5, 3.5))
    else:
        fig = ax.figure
    layers = next(iter(results.values())).layers
    for name, result in results.items():
        if result.layers != layers:
            raise ValueError(f"results[{name!r}] has layers {result.layers}, the first has {layers}")
        ax.plot(range(len(layers)), result.per_layer[0].tolist(), marker="o",
                label=f"{name} ({float(result.score[0]):.2f})")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("share of other photos farther")
    ax.set_title(title or "Does the network process it like photos of the class?")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside: no line hidden
    fig.tight_layout()
    return fig
