"""Uncovering a bias with saliency: a classifier that is right for the wrong reason.

A small bright square (the marker) is stamped into a corner of the training images of
one class, and almost never into the others. A :class:`cs_utils.SmallCNN` trained on
them learns the shortcut: its accuracy falls when the marker moves to the other classes,
and its saliency maps light up the marker.

* :func:`marker_box` and :func:`stamp_marker`: where the marker goes, and stamping it;
* :func:`marked_set`: images with the marker on a given share of one class and of the others
  (exact counts, drawn at random), :func:`shortcut_sets` the train / "same" / "moved" sets;
* :func:`marker_share`: the share of each saliency map inside the marker box;
* :func:`bias_experiment`: the whole experiment in one call, a :class:`BiasExperiment`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .labeled_images import LabeledImages, load_labeled_images
from .saliency import saliency_map
from .small_cnn import SmallCNN, TrainingHistory, classifier_accuracy, train_classifier
from .validation import class_indices, non_negative_int, positive_int, probability

__all__ = [
    "HARD_CLASSES",
    "BiasExperiment",
    "Box",
    "MarkedSet",
    "bias_experiment",
    "marked_set",
    "marker_box",
    "marker_share",
    "shortcut_sets",
    "stamp_marker",
]

#: The default class to mark in each data set: the one a small CNN confuses most often (digits:
#: "8"; Fashion-MNIST: "shirt"), so that the marker is the easier way to recognise it.
HARD_CLASSES = {"digits": 8, "fashion_mnist": 6}

_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


# --------------------------------------------------------------------------- the marker

class Box(NamedTuple):
    """A rectangle of pixels: rows ``top .. top + height - 1``, columns ``left .. left + width - 1``."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` to index the last two axes of images or maps: ``x[..., rows, cols]``."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def area_share(self, height: int, width: int) -> float:
        """The box's share of a ``height`` x ``width`` image: its pixels / all pixels."""
        return self.height * self.width / (height * width)


def marker_box(image_size, *, size: int = 4, corner: str = "top_left", margin: int = 1) -> Box:
    """The :class:`Box` of a ``size`` x ``size`` marker ``margin`` pixels from a ``corner``.

    ``image_size``: the image side, or (height, width). ``corner``: ``"top_left"``,
    ``"top_right"``, ``"bottom_left"`` or ``"bottom_right"``.
    """
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        height, width = (positive_int(v, "image_size") for v in image_size)
    else:
        height = width = positive_int(image_size, "image_size")
    size, margin = positive_int(size, "size"), non_negative_int(margin, "margin")
    if corner not in _CORNERS:
        raise ValueError(f"corner must be one of {', '.join(_CORNERS)}, got {corner!r}")
    if size + margin > min(height, width):
        raise ValueError(f"a {size} px marker {margin} px from the corner does not fit a "
                         f"{height}x{width} image")
    top = margin if corner.startswith("top") else height - margin - size
    left = margin if corner.endswith("left") else width - margin - size
    return Box(top, left, size, size)


def _check_box(box, height: int, width: int) -> Box:
    if not (isinstance(box, tuple) and len(box) == 4 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in box)):
        raise TypeError(f"box must be a (top, left, height, width) tuple of ints such as marker_box(28), "
                        f"got {box!r}")
    box = Box(*(int(v) for v in box))
    if box.top < 0 or box.left < 0 or box.height < 1 or box.width < 1 or (
            box.top + box.height > height or box.left + box.width > width):
        raise ValueError(f"box {tuple(box)} (top, left, height, width) is not inside the "
                         f"{height}x{width} image")
    return box


def stamp_marker(images: torch.Tensor, box, *, which=None, value: float = 1.0) -> torch.Tensor:
    """A copy of ``images`` (N, C, H, W) with every pixel of ``box`` set to ``value`` in every channel.

    ``which``: a boolean mask (N,) of the images to stamp (default: all); the others are copied
    unchanged. ``images`` itself is not changed.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    box = _check_box(box, *images.shape[-2:])
    value = probability(value, "value")     # a pixel value in [0, 1]
    out = images.detach().clone()
    if which is None:
        which = torch.ones(len(images), dtype=torch.bool)
    which = torch.as_tensor(which)
    if which.dtype != torch.bool or which.shape != (len(images),):
        raise ValueError(f"which must be a boolean mask with one value per image ({len(images)}), "
                         f"got {which.dtype} {tuple(which.shape)}")
    rows, cols = box.slices()
    out[which.to(out.device), :, rows, cols] = value
    return out


def marker_share(maps: torch.Tensor, box) -> torch.Tensor:
    """The share of each saliency map inside ``box``: ``sum |map| in box / sum |map|``, (N,) floats.

    ``maps``: (N, H, W), or (N, C, H, W) reduced with abs-max over channels. A map that is
    zero everywhere has no share (NaN).
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4):
        raise ValueError(f"maps must be a tensor (N, H, W) or (N, C, H, W), got "
                         f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    maps = maps.detach().abs().double()
    maps = maps.amax(dim=1) if maps.dim() == 4 else maps
    rows, cols = _check_box(box, *maps.shape[-2:]).slices()
    total = maps.sum(dim=(1, 2))
    inside = maps[:, rows, cols].sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))


# --------------------------------------------------------------------------- the data sets

@dataclass(frozen=True)
class MarkedSet:
    """Labelled images, some with the marker: ``images`` (N, 3, H, W) in [0, 1], ``labels`` (N,)
    int64, ``marked`` (N,) bool (True where the marker was stamped)."""

    images: torch.Tensor
    labels: torch.Tensor
    marked: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def marker_rate(self, label: int, *, others: bool = False) -> float:
        """The share of images of class ``label`` (or, with ``others=True``, of every other
        class) that carry the marker."""
        group = (self.labels != label) if others else (self.labels == label)
        return self.marked[group].double().mean().item() if group.any() else float("nan")


def _chosen(group: torch.Tensor, share: float, generator: torch.Generator | None) -> torch.Tensor:
    """``round(share * len(group))`` of the indices ``group``, drawn at random."""
    count = int(share * len(group) + 0.5)
    return group[torch.randperm(len(group), generator=generator)[:count]]


def marked_set(images: torch.Tensor, labels: torch.Tensor, box, *, marked_class: int, p_marked: float,
               p_other: float, generator: torch.Generator | None = None) -> MarkedSet:
    """The images with the marker in ``box`` on a ``p_marked`` share of class ``marked_class``
    and a ``p_other`` share of the other classes.

    Exact counts: ``round(p * group size)`` images of each group, drawn at random with
    ``generator``, get the marker (:func:`stamp_marker`); ``images`` is not changed.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be a tensor (N,) with one class index per image ({len(images)})")
    labels = class_indices(labels, len(labels), what="labels")
    marked_class = int(class_indices(marked_class, 1, what="marked_class")[0])
    p_marked, p_other = probability(p_marked, "p_marked"), probability(p_other, "p_other")
    which = torch.zeros(len(labels), dtype=torch.bool)
    in_class = labels == marked_class
    which[_chosen(torch.nonzero(in_class)[:, 0], p_marked, generator)] = True
    which[_chosen(torch.nonzero(~in_class)[:, 0], p_other, generator)] = True
    return MarkedSet(stamp_marker(images, box, which=which), labels.clone(), which)


def shortcut_sets(data: LabeledImages, box, *, marked_class: int, p_marked: float, p_other: float,
                  test_fraction: float = 0.25,
                  generator: torch.Generator | None = None) -> tuple[MarkedSet, MarkedSet, MarkedSet]:
    """``(train, same, moved)``: the images of ``data`` (as RGB) split at random into training and
    test images (a ``test_fraction`` share), and marked:

    * ``train`` and ``same`` (the test images): the marker on a ``p_marked`` share of class
      ``marked_class`` and a ``p_other`` share of the other classes (:func:`marked_set`);
    * ``moved`` (the same test images): the marker on every image of the other classes and
      on none of class ``marked_class``.
    """
    test_fraction = probability(test_fraction, "test_fraction", allow_one=False)
    images, labels = data.rgb(), data.labels
    order = torch.randperm(len(labels), generator=generator)
    n_test = int(test_fraction * len(labels) + 0.5)
    if n_test < 1 or n_test == len(labels):
        raise ValueError(f"test_fraction={test_fraction} leaves no test or no training images "
                         f"of {len(labels)}")
    test, train = order[:n_test], order[n_test:]
    common = dict(marked_class=marked_class, generator=generator)
    return (marked_set(images[train], labels[train], box, p_marked=p_marked, p_other=p_other, **common),
            marked_set(images[test], labels[test], box, p_marked=p_marked, p_other=p_other, **common),
            marked_set(images[test], labels[test], box, p_marked=0.0, p_other=1.0, **common))


# --------------------------------------------------------------------------- the experiment

@dataclass(frozen=True)
class BiasExperiment:
    """A :class:`SmallCNN` trained on ``train`` (see :func:`bias_experiment`) and its test sets."""

    model: nn.Module
    train: MarkedSet
    same: MarkedSet               # test images marked as in training
    moved: MarkedSet              # the marker on every other class, none on the marked class
    box: Box
    marked_class: int
    class_names: tuple[str, ...]
    dataset: str
    history: TrainingHistory
    accuracy_same: float
    accuracy_moved: float

    @property
    def accuracy_drop(self) -> float:
        """``accuracy_same - accuracy_moved`` (a fraction: 0.3 is 30 points)."""
        return self.accuracy_same - self.accuracy_moved

    @property
    def marker_area(self) -> float:
        """The marker's share of the image's pixels."""
        return self.box.area_share(*self.same.images.shape[-2:])

    def marked_examples(self) -> torch.Tensor:
        """The test images (``same`` set) of the marked class that carry the marker, (n, 3, H, W)."""
        keep = (self.same.labels == self.marked_class) & self.same.marked
        return self.same.images[keep]

    def marker_saliency(self, explain: Callable = saliency_map) -> torch.Tensor:
        """:func:`marker_share` of ``explain(model, x, marked_class)`` for each of :meth:`marked_examples`."""
        x = self.marked_examples()
        return marker_share(explain(self.model, x, self.marked_class), self.box)

    def marker_ratio(self, explain: Callable = saliency_map) -> float:
        """The mean :meth:`marker_saliency` over the marker's share of the image: 1 means the
        marker gets no more saliency than any other patch of its size."""
        return self.marker_saliency(explain).mean().item() / self.marker_area

    def summary(self, explain: Callable = saliency_map) -> str:
        """A few lines: the data, the training, both accuracies, the saliency inside the marker."""
        share = self.marker_saliency(explain).mean().item()
        name = self.class_names[self.marked_class]
        return "\n".join([
            f"{self.dataset}: marker {self.box.height}x{self.box.width} px on "
            f"{self.train.marker_rate(self.marked_class):.0%} of class {name!r} and "
            f"{self.train.marker_rate(self.marked_class, others=True):.1%} of the others "
            f"({len(self.train)} training images)",
            f"trained {self.history.steps} steps in {self.history.seconds:.1f} s",
            f"accuracy, marker as in training: {self.accuracy_same:.1%}; marker moved to the other "
            f"classes: {self.accuracy_moved:.1%} (drop {100 * self.accuracy_drop:.0f} points)",
            f"saliency inside the marker ({name!r} test images with it): {share:.1%} of the total, "
            f"{share / self.marker_area:.1f}x the marker's {self.marker_area:.1%} of the image",
        ])


def bias_experiment(steps: int = 150, *, marked_class: int | None = None, marker_size: int = 5,
                    corner: str = "top_left", p_marked: float = 1.0, p_other: float = 0.0, size: int = 28,
                    dataset: str = "auto", root=None, n_images: int | None = None,
                    test_fraction: float = 0.25, kernel_size: int = 3, batch_size: int = 64, lr: float = 3e-3,
                    generator: torch.Generator | None = None, progress: bool = True) -> BiasExperiment:
    """Train a classifier on images where a marker gives one class away, and test it.

    Loads :func:`cs_utils.load_labeled_images` (``dataset``, its files in ``root``, ``size`` x
    ``size``, ``n_images`` of them or all), builds :func:`shortcut_sets` with a ``marker_size`` px marker in
    ``corner`` on a ``p_marked`` share of class ``marked_class`` (default: the data set's
    :data:`HARD_CLASSES` entry) and a ``p_other`` share of the others, trains a
    :class:`SmallCNN` (``kernel_size``; RGB input, so the saliency functions take its images)
    for ``steps`` steps with :func:`train_classifier`, and measures its accuracy on the
    ``same`` and ``moved`` test sets. ``generator`` draws everything (seed 0 without one).
    Returns a :class:`BiasExperiment`; ``print(result.summary())``.

    The defaults make the shortcut reliable: with them the network learns the marker, not the
    shape (accuracy falls when the marker moves, and the saliency maps crowd on the marker); with
    the marker on most but not all of the class and a few others, it learns the shapes instead.
    The measured drops are in ``benchmarks/README.md``.
    """
    steps = positive_int(steps, "steps")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    data = load_labeled_images(n_images, size=size, dataset=dataset, root=root, generator=generator)
    if marked_class is None:
        marked_class = HARD_CLASSES[data.name]
    marked_class = int(class_indices(marked_class, 1, classes=len(data.class_names), what="marked_class")[0])
    box = marker_box(data.images.shape[-2:], size=marker_size, corner=corner)
    train, same, moved = shortcut_sets(data, box, marked_class=marked_class, p_marked=p_marked,
                                       p_other=p_other, test_fraction=test_fraction, generator=generator)
    seed = int(torch.randint(2**31, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):    # initial weights from the generator; global RNG untouched
        torch.manual_seed(seed)
        model = SmallCNN(in_channels=3, num_classes=len(data.class_names), kernel_size=kernel_size)
    history = train_classifier(model, train.images, train.labels, steps=steps, batch_size=batch_size, lr=lr,
                               generator=generator, progress=progress, desc="training on marked images")
    model.eval()
    return BiasExperiment(model, train, same, moved, box, marked_class, data.class_names, data.name, history,
                          classifier_accuracy(model, same.images, same.labels),
                          classifier_accuracy(model, moved.images, moved.labels))
