"""What has the network learned? Filters, neighbours, embeddings and maximally activating patches.

* :func:`load_labelled_images` gives an offline labelled image set (Fashion-MNIST
  when its Debian package is installed, scikit-learn's digits otherwise);
  :class:`SmallCNN` and :func:`train_classifier` train a small network on it so
  its first-layer filters can be compared before and after training.
* :func:`compute_features` runs images through a model in batches and returns
  one feature vector per image; :func:`nearest_neighbours` searches a gallery;
  :func:`gallery_with_copies` builds a gallery with flipped and shifted copies.
* :func:`embed_2d` (PCA or t-SNE from scikit-learn) and :func:`knn_accuracy`.
* :func:`receptive_field` computes the exact receptive field of a layer from the
  kernels, strides and paddings of the convolutions that run before it
  (including TensorFlow SAME padding, which depends on the input size);
  :func:`top_activations` and :func:`crop_patches` give the maximally
  activating image patches of a channel.
"""

from __future__ import annotations

import gzip
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hooks import _as_names, evaluating, extract_features, get_layer
from .image import check_image, load_image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "Gallery",
    "LabelledImages",
    "ReceptiveField",
    "SmallCNN",
    "TopActivations",
    "TrainingHistory",
    "classifier_accuracy",
    "compute_features",
    "crop_patches",
    "embed_2d",
    "filter_images",
    "filter_smoothness",
    "gallery_with_copies",
    "knn_accuracy",
    "load_labelled_images",
    "nearest_neighbours",
    "place_randomly",
    "random_crops",
    "receptive_field",
    "top_activations",
    "train_classifier",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs its files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _progress(iterable, *, total=None, desc=None, enabled=True):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _seed_from(generator: torch.Generator | None) -> int:
    """An int seed for libraries that take one (scikit-learn), drawn from ``generator``."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


# --------------------------------------------------------------------------- labelled images

@dataclass(frozen=True)
class LabelledImages:
    """A labelled image set: ``images`` (N, 1, H, W) float32 in [0, 1], ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str          # "fashion_mnist" or "digits"
    source: str        # where the files came from

    def __len__(self) -> int:
        return len(self.labels)

    def rgb(self) -> torch.Tensor:
        """The images as (N, 3, H, W): the grey channel repeated, for ImageNet models."""
        return self.images.expand(-1, 3, -1, -1).contiguous()


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise ValueError(f"{str(path)!r} is truncated: expected {math.prod(shape)} values, got {body.size}")
    return body.reshape(shape)


def _fashion_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = _FASHION_FILES[split]
    images = _read_idx(root / image_file)
    labels = _read_idx(root / label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"Fashion-MNIST files in {str(root)!r} disagree: images {images.shape}, "
                         f"labels {labels.shape}")
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def load_labelled_images(n: int | None = None, *, size: int | None = None, dataset: str = "auto",
                         split: str = "test", root=None,
                         generator: torch.Generator | None = None) -> LabelledImages:
    """A labelled set of small greyscale images, offline.

    ``dataset``: ``"fashion_mnist"`` (Zalando's 28x28 clothing photos, 10 classes;
    from the Debian package ``dataset-fashion-mnist``, files in ``root``, default
    :data:`FASHION_MNIST_DIR`), ``"digits"`` (scikit-learn's 1,797 handwritten
    8x8 digits, always available) or ``"auto"`` (Fashion-MNIST when its files are
    there, else digits). The result's ``name`` says which one was used.

    ``split``: Fashion-MNIST's ``"test"`` (10,000 images, quick to read) or
    ``"train"`` (60,000); digits has one set. ``n``: keep ``n`` images, a random
    subset drawn with ``generator`` (the first ``n`` without one). ``size``:
    resize to ``size`` x ``size`` (bilinear, antialiased).
    """
    if dataset not in ("auto", "fashion_mnist", "digits"):
        raise ValueError(f"dataset must be 'auto', 'fashion_mnist' or 'digits', got {dataset!r}")
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None:
        n = _check_positive_int(n, "n")
    if size is not None:
        size = _check_positive_int(size, "size")
    root = FASHION_MNIST_DIR if root is None else Path(root)
    have_fashion = all((root / f).exists() for f in _FASHION_FILES[split])
    if dataset == "fashion_mnist" and not have_fashion:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {str(root)!r}; install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), pass root= the folder that holds "
            f"{', '.join(_FASHION_FILES[split])}, or use dataset='digits'")
    if dataset != "digits" and have_fashion:
        pixels, labels = _fashion_mnist(root, split)
        name, class_names, source = "fashion_mnist", FASHION_MNIST_CLASSES, str(root)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = digits.images.astype(np.float32) / 16.0
        labels = digits.target.astype(np.int64)
        name, class_names = "digits", tuple(str(i) for i in range(10))
        source = "sklearn.datasets.load_digits"
    images = torch.from_numpy(np.ascontiguousarray(pixels))[:, None]
    labels_t = torch.from_numpy(labels)
    if n is not None:
        if n > len(labels_t):
            raise ValueError(f"asked for {n} images, but {name} has {len(labels_t)}")
        keep = (torch.randperm(len(labels_t), generator=generator)[:n] if generator is not None
                else torch.arange(n))
        images, labels_t = images[keep], labels_t[keep]
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True).clamp_(0, 1)
    return LabelledImages(images.contiguous(), labels_t.contiguous(), class_names, name, source)


# --------------------------------------------------------------------------- a small CNN and its training

class SmallCNN(nn.Module):
    """A small classifier for 28x28-ish images whose first layer has wide kernels.

    Takes images in [0, 1] and maps them to [-1, 1] first (centred inputs keep
    filters from dying: with all-positive inputs, a filter that turns negative
    never fires again). ``conv1`` (``kernel_size`` x ``kernel_size``, ``width`` filters) -> ReLU -> 2x2
    max pool -> ``conv2`` (3x3, 2 * ``width``) -> ReLU -> 4x4 average pool -> ``fc``
    (the pooled map stays 4x4 so ``fc`` still knows where things are).
    ``init_scale`` multiplies conv1's default initial weights and biases: a small
    start means the filters after training show what training put there.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, *, kernel_size: int = 7,
                 width: int = 16, init_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(1))
        self.fc = nn.Linear(2 * width * 16, num_classes)
        with torch.no_grad():
            self.conv1.weight.mul_(init_scale)
            self.conv1.bias.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(2 * x - 1)))
        return self.fc(self.pool(self.relu2(self.conv2(x))))


@dataclass
class TrainingHistory:
    """Per-step training loss and batch accuracy, and the wall time."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.loss)

    def plot(self, ax=None, *, smooth: int = 10):
        """Loss and batch accuracy per step (running mean over ``smooth`` steps); returns the Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3))
        fig = ax.figure
        window = max(1, min(int(smooth), len(self.loss)))
        kernel = np.ones(window) / window
        steps = np.arange(window, len(self.loss) + 1)
        ax.plot(steps, np.convolve(self.loss, kernel, mode="valid"), color="C0", label="loss")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy", color="C0")
        twin = ax.twinx()
        twin.plot(steps, np.convolve(self.accuracy, kernel, mode="valid"), color="C1", label="accuracy")
        twin.set_ylabel("batch accuracy", color="C1")
        twin.set_ylim(0, 1)
        return fig


def _check_labelled(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError("labels must be an int64 tensor (N,) of class indices")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no images to train on")


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
                     generator: torch.Generator | None = None, progress: bool = True,
                     desc: str = "training") -> TrainingHistory:
    """Train ``model`` (in place: training is the point) with Adam and cross-entropy.

    Each step draws a random batch of ``batch_size`` images with ``generator``
    (epochs of shuffled indices). Only parameters with ``requires_grad`` are
    trained. The model is in train mode during training and gets back each
    module's previous mode after; ``images`` and ``labels`` are not changed.
    Returns a :class:`TrainingHistory` (loss and batch accuracy per step).
    """
    steps = _check_positive_int(steps, "steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_labelled(images, labels)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True to train")
    device = params[0].device
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    modes = [(m, m.training) for m in model.modules()]
    history = TrainingHistory()
    start = time.perf_counter()
    order = torch.empty(0, dtype=torch.long)
    try:
        model.train()
        for _ in _progress(range(steps), total=steps, desc=desc, enabled=progress):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
            batch, order = order[:batch_size], order[batch_size:]
            x = images[batch].to(device)
            y = labels[batch].to(device)
            scores = model(x)
            if scores.dim() != 2 or int(labels.max()) >= scores.shape[1] or int(labels.min()) < 0:
                raise ValueError(f"labels must be class indices in [0, {scores.shape[-1] - 1}] for a model "
                                 f"with output shape {tuple(scores.shape)}; got labels in "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
            loss = F.cross_entropy(scores, y)
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            for p in params:
                p.grad = None
            history.loss.append(loss.item())
            history.accuracy.append((scores.argmax(1) == y).float().mean().item())
    finally:
        for module, training in modes:
            module.train(training)
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        batch_size: int = 256) -> float:
    """The fraction of ``images`` that ``model`` (in eval mode, restored after) classifies right."""
    _check_labelled(images, labels)
    batch_size = _check_positive_int(batch_size, "batch_size")
    device = next(model.parameters()).device
    correct = 0
    with evaluating(model):
        for i in range(0, len(labels), batch_size):
            scores = model(images[i:i + batch_size].to(device))
            correct += (scores.argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum().item()
    return correct / len(labels)


def filter_images(weight) -> torch.Tensor:
    """Convolution filters as images: each filter rescaled on its own to [0, 1].

    ``weight``: a conv layer or its weight (C_out, C_in, kH, kW). Each filter's
    smallest value becomes 0 and its largest 1 (x 255 for 8-bit pixels); a
    constant filter becomes mid-grey. Returns a new detached (C_out, C_in, kH, kW)
    float tensor; with C_in = 3 each filter is an RGB image.
    """
    if isinstance(weight, nn.Module):
        if not isinstance(getattr(weight, "weight", None), torch.Tensor):
            raise TypeError(f"{type(weight).__name__} has no weight tensor; pass a conv layer or a weight")
        weight = weight.weight
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"expected conv filters of shape (C_out, C_in, kH, kW), got {shape}")
    w = weight.detach().float()
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - lo
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.full_like(flat, 0.5))
    return scaled.reshape(w.shape).clone()


def filter_smoothness(weight) -> torch.Tensor:
    """How smooth each filter is: the correlation between horizontally and vertically
    neighbouring weights (after removing each filter's mean), one value per filter.

    About 0 for random (white-noise) filters, near 1 for smooth edges and blobs;
    negative for checkerboards. ``weight``: a conv layer or (C_out, C_in, kH, kW).
    """
    w = filter_images(weight) * 2 - 1  # the same tensor, any scale: correlation ignores it
    w = w - w.mean((1, 2, 3), keepdim=True)
    pairs = (w[..., 1:, :] * w[..., :-1, :]).sum((1, 2, 3)) + (w[..., :, 1:] * w[..., :, :-1]).sum((1, 2, 3))
    energy = ((w[..., 1:, :] ** 2 + w[..., :-1, :] ** 2).sum((1, 2, 3))
              + (w[..., :, 1:] ** 2 + w[..., :, :-1] ** 2).sum((1, 2, 3))) / 2
    return torch.where(energy > 0, pairs / energy.clamp_min(1e-12), torch.zeros_like(energy))


# --------------------------------------------------------------------------- features and neighbours

def compute_features(model: nn.Module, images: torch.Tensor, layer: str = "pool", *, batch_size: int = 32,
                     progress: bool = True, desc: str | None = None) -> torch.Tensor:
    """The output of ``layer`` for every image, flattened: (N, D), detached, on ``images``' device.

    Images go through the model (eval mode, restored after) in batches of
    ``batch_size``, and each forward pass stops after ``layer``. For EfficientNet
    ``"pool"`` gives the 1280-d penultimate features.
    """
    check_image(images, "images")
    batch_size = _check_positive_int(batch_size, "batch_size")
    get_layer(model, layer)
    device = next(model.parameters()).device
    chunks = []
    starts = range(0, len(images), batch_size)
    with torch.no_grad(), evaluating(model):
        for i in _progress(starts, total=len(starts), desc=desc or f"features of {layer}", enabled=progress):
            out = extract_features(model, images[i:i + batch_size].to(device), [layer])[layer]
            chunks.append(out.reshape(out.shape[0], -1).to(images.device))
    if not chunks:
        raise ValueError("no images: images has batch size 0")
    return torch.cat(chunks)


def nearest_neighbours(queries: torch.Tensor, gallery: torch.Tensor, k: int, *,
                       exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery items nearest to each query in Euclidean distance.

    ``queries`` (Q, ...) and ``gallery`` (G, ...): feature vectors or images,
    flattened after the first axis (so pixel space is just the images).
    ``exclude``: for each query, a gallery index to skip (e.g. the query itself)
    or -1 for none. Returns ``(distances, indices)``, both (Q, k), nearest first;
    ties keep gallery order.
    """
    if not isinstance(queries, torch.Tensor) or not isinstance(gallery, torch.Tensor):
        raise TypeError("queries and gallery must be tensors (N, ...)")
    if queries.dim() < 2 or gallery.dim() < 2:
        raise ValueError(f"queries and gallery need a batch axis: got shapes {tuple(queries.shape)} "
                         f"and {tuple(gallery.shape)}; add one with x[None]")
    if queries[0].numel() != gallery[0].numel():
        raise ValueError(f"queries have {queries[0].numel()} values each but gallery items have "
                         f"{gallery[0].numel()}: compare like with like")
    k = _check_positive_int(k, "k")
    available = len(gallery) - (0 if exclude is None else 1)
    if k > available:
        raise ValueError(f"k={k} but only {available} gallery items can be returned per query")
    if exclude is not None:
        exclude = torch.as_tensor(exclude, dtype=torch.long).reshape(-1)
        if exclude.numel() != len(queries):
            raise ValueError(f"exclude needs one index per query ({len(queries)}), got {exclude.numel()}")
        if ((exclude < -1) | (exclude >= len(gallery))).any():
            raise ValueError(f"exclude indices must be in [-1, {len(gallery) - 1}]")
    ### BEGIN SOLUTION
    q = queries.detach().reshape(len(queries), -1).double()
    g = gallery.detach().reshape(len(gallery), -1).double().to(q.device)
    distances = torch.cdist(q, g, compute_mode="donot_use_mm_for_euclid_dist")
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).reshape(-1)
        distances[rows, exclude[rows].to(q.device)] = math.inf
    sorted_distances, order = torch.sort(distances, dim=1, stable=True)
    distances, indices = sorted_distances[:, :k], order[:, :k]
    return distances.to(queries.device, queries.dtype if queries.is_floating_point() else torch.float64), \
        indices.to(queries.device)
    ### END SOLUTION


@dataclass(frozen=True)
class Gallery:
    """Images with where each came from: ``source[i]`` indexes ``names``; ``kind[i]`` is
    ``"original"``, ``"flipped"`` or ``"shifted"``."""

    images: torch.Tensor
    names: tuple[str, ...]
    source: torch.Tensor
    kind: tuple[str, ...]

    def label(self, i: int) -> str:
        return f"{self.names[int(self.source[i])]} ({self.kind[i]})"

    def index_of(self, name: str, kind: str = "original") -> int:
        for i in range(len(self.kind)):
            if self.names[int(self.source[i])] == name and self.kind[i] == kind:
                return i
        raise KeyError(f"no {kind} copy of {name!r} in the gallery; names: {', '.join(self.names)}")


def gallery_with_copies(photos, size: int, *, shift: int) -> Gallery:
    """Every photo (names, :class:`~cs_utils.SampleImage` s or image tensors) with two copies.

    Each photo is loaded with its shorter side at ``size + shift`` and centre
    cropped to a square; the *original* is its top-left ``size`` x ``size``
    crop, the *flipped* copy that crop mirrored left-right, and the *shifted*
    copy the crop ``shift`` pixels further down and right (the same scene moved
    by ``shift`` pixels diagonally, no wrap-around). Images are ordered
    originals, then flipped, then shifted.
    """
    size = _check_positive_int(size, "size")
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be an int >= 0, got {shift!r}")
    photos = list(photos)
    if not photos:
        raise ValueError("no photos given")
    names, crops = [], []
    for i, photo in enumerate(photos):
        if isinstance(photo, torch.Tensor):
            names.append(f"image {i}")
            big = load_image(photo, size + shift)
        else:
            names.append(getattr(photo, "name", str(photo)))
            big = load_image(getattr(photo, "name", photo), size + shift)
        crops.append(big)
    big = torch.cat(crops)
    originals = big[..., :size, :size]
    flipped = originals.flip(-1)
    shifted = big[..., shift:shift + size, shift:shift + size]
    n = len(photos)
    return Gallery(torch.cat([originals, flipped, shifted]).contiguous(), tuple(names),
                   torch.arange(n).repeat(3), ("original",) * n + ("flipped",) * n + ("shifted",) * n)


def random_crops(images, n: int, size: int, *, scale=(0.4, 1.0),
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random square crops of each image, resized to ``size`` x ``size``.

    ``images``: a list of (1, 3, H, W) tensors (sizes may differ) or a batch.
    Each crop's side is a fraction of the image's shorter side drawn uniformly
    from ``scale``, at a uniformly random position. Returns ``(crops, source)``:
    (len(images) * n, 3, size, size) and the index of the image each came from.
    """
    n = _check_positive_int(n, "n")
    size = _check_positive_int(size, "size")
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
    items = list(images) if not isinstance(images, torch.Tensor) else [images[i:i + 1]
                                                                       for i in range(len(images))]
    out, source = [], []
    for index, image in enumerate(items):
        image = check_image(image if image.dim() == 4 else image[None], "images[i]")
        h, w = image.shape[-2:]
        for _ in range(n):
            u = torch.rand(3, generator=generator).tolist()
            side = max(1, round((lo + (hi - lo) * u[0]) * min(h, w)))
            top, left = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
            crop = image[..., top:top + side, left:left + side]
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=True).clamp(0, 1))
            source.append(index)
    return torch.cat(out), torch.tensor(source)


def place_randomly(images: torch.Tensor, canvas_size: int, *, background: float = 0.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste each image (N, C, h, w) at a random position on a ``canvas_size`` square canvas.

    The same objects, moved: what a translation does to distances in pixel space.
    Positions are uniform over all places where the image fits, drawn with
    ``generator``. Returns ``(canvases (N, C, S, S), offsets (N, 2) as (top, left))``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a tensor (N, C, h, w)")
    canvas_size = _check_positive_int(canvas_size, "canvas_size")
    n, c, h, w = images.shape
    if h > canvas_size or w > canvas_size:
        raise ValueError(f"images of {h}x{w} do not fit on a {canvas_size}x{canvas_size} canvas")
    tops = torch.randint(0, canvas_size - h + 1, (n,), generator=generator)
    lefts = torch.randint(0, canvas_size - w + 1, (n,), generator=generator)
    out = torch.full((n, c, canvas_size, canvas_size), float(background), dtype=images.dtype)
    for i in range(n):
        out[i, :, tops[i]:tops[i] + h, lefts[i]:lefts[i] + w] = images[i].detach().cpu()
    return out.to(images.device), torch.stack([tops, lefts], 1)


# --------------------------------------------------------------------------- 2-D embeddings

def _as_2d_array(points, name: str) -> np.ndarray:
    a = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if a.ndim < 2:
        raise ValueError(f"{name} must be (N, D) (one row per item), got shape {a.shape}")
    return a.reshape(a.shape[0], -1).astype(np.float64)


def embed_2d(features, method: str = "tsne", *, perplexity: float = 30.0, pca_dims: int | None = 50,
             generator: torch.Generator | None = None) -> np.ndarray:
    """Points (N, D) -> (N, 2) with scikit-learn's PCA or t-SNE.

    t-SNE (van der Maaten & Hinton 2008) first reduces to ``pca_dims`` dimensions
    with PCA (faster, less noise; ``None`` skips it), starts from the PCA layout
    and is seeded from ``generator``. Returns a numpy array.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = _as_2d_array(features, "features")
    if method not in ("tsne", "pca"):
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to embed, got {len(x)}")
    seed = _seed_from(generator)
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(x)
    if not 0 < perplexity < len(x):
        raise ValueError(f"perplexity must be in (0, {len(x)}) for {len(x)} points, got {perplexity}")
    if pca_dims is not None and x.shape[1] > pca_dims:
        x = PCA(min(pca_dims, len(x)), random_state=seed).fit_transform(x)
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x)


def knn_accuracy(points, labels, *, k: int = 5, folds: int = 5) -> float:
    """Cross-validated accuracy of a ``k``-nearest-neighbour classifier on ``points`` (N, D).

    Stratified ``folds``-fold cross-validation with scikit-learn; the mean over folds.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = _as_2d_array(points, "points")
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.shape != (len(x),):
        raise ValueError(f"need one label per point: {len(x)} points, labels of shape {y.shape}")
    k = _check_positive_int(k, "k")
    folds = _check_positive_int(folds, "folds")
    if folds < 2:
        raise ValueError("folds must be at least 2")
    scores = cross_val_score(KNeighborsClassifier(k), x, y, cv=StratifiedKFold(folds))
    return float(scores.mean())


# --------------------------------------------------------------------------- receptive fields

_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
              nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Dropout2d, nn.Identity,
              nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _spatial_op(module: nn.Module, in_size: tuple[int, int]):
    """(kernel, stride, dilation, padding before) per dimension, or None for pointwise modules."""
    from .models import Conv2dSame

    if isinstance(module, Conv2dSame):
        pad = tuple(module.same_padding(in_size[d], d)[0] for d in range(2))
        return _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation), pad
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            if module.padding == "valid":
                pad = (0, 0)
            else:  # PyTorch's "same" (stride 1): the smaller half goes first
                pad = tuple(d * (k - 1) // 2
                            for d, k in zip(_pair(module.dilation), _pair(module.kernel_size)))
        else:
            pad = _pair(module.padding)
        return _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation), pad
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _pair(getattr(module, "dilation", 1))
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        return _pair(module.kernel_size), stride, dilation, _pair(module.padding)
    if isinstance(module, _POINTWISE):
        return None
    return "unknown"


@dataclass(frozen=True)
class ReceptiveField:
    """Where each unit of a layer looks in the input, per dimension (rows, columns).

    The unit at output position ``(r, c)`` depends exactly on input rows
    ``offset[0] + r * stride[0]`` .. ``+ size[0] - 1`` (and likewise columns);
    ``offset`` is negative where padding reaches outside the image.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]
    input_size: tuple[int, int]
    output_size: tuple[int, int]

    def box(self, row: int, col: int, *, clip: bool = True) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` input box of the unit at ``(row, col)``; bottom/right exclusive.

        With ``clip`` (default) the box is cut to the image.
        """
        for value, limit, name in ((row, self.output_size[0], "row"), (col, self.output_size[1], "col")):
            if not 0 <= int(value) < limit:
                raise IndexError(f"{name} {value} is outside the layer's output of size {self.output_size}")
        top = self.offset[0] + int(row) * self.stride[0]
        left = self.offset[1] + int(col) * self.stride[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, self.input_size[0]), min(right, self.input_size[1])
        return top, left, bottom, right


def _spatial_ops_before(model: nn.Module, layer: str, input_size: tuple[int, int]):
    """The spatial operations (kernel, stride, dilation, pad before) that run before ``layer``'s
    output, in order, found by running the model once on a blank image of ``input_size``."""
    target = get_layer(model, layer)
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    ops: list = []
    sizes: dict = {}

    class _Stop(Exception):
        pass

    def record(name, module):
        def hook(mod, inputs, output):
            x = inputs[0] if inputs else None
            if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or x.dim() != 4:
                return
            if output.dim() != 4:
                raise ValueError(f"layer {name!r} ({type(mod).__name__}) runs before {layer!r} and does not "
                                 "output a spatial map; pick a convolutional layer")
            in_size, out_size = tuple(x.shape[-2:]), tuple(output.shape[-2:])
            op = _spatial_op(mod, in_size)
            if op == "unknown":
                has_kernel = any(p.dim() == 4 for p in mod.parameters(recurse=False))
                if in_size != out_size or has_kernel:
                    raise ValueError(
                        f"layer {name!r} ({type(mod).__name__}) runs before {layer!r} and its receptive "
                        f"field is not known here (input {in_size}, output {out_size}); supported: Conv2d, "
                        "Conv2dSame, MaxPool2d, AvgPool2d and layers that work pixel by pixel; a global "
                        "pool sees the whole image")
                op = None  # keeps the size and has no kernel: works pixel by pixel
            if op is not None:
                ops.append(op)
        return hook

    def stop(mod, inputs, output):
        is_map = isinstance(output, torch.Tensor) and output.dim() == 4
        sizes["target"] = tuple(output.shape[-2:]) if is_map else None
        raise _Stop

    param = next(model.parameters())
    device, dtype = param.device, (param.dtype if param.is_floating_point() else torch.float32)
    in_channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    handles = []
    try:
        for name, module in leaves:
            handles.append(module.register_forward_hook(record(name, module)))
        handles.append(target.register_forward_hook(stop))
        with torch.no_grad(), evaluating(model):
            try:
                model(torch.full((1, in_channels, *input_size), 0.5, device=device, dtype=dtype))
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    if "target" not in sizes:
        raise RuntimeError(f"layer {layer!r} did not run in the forward pass")
    if sizes["target"] is None:
        raise ValueError(f"layer {layer!r} does not output a spatial map (N, C, H, W); "
                         "pick a convolutional layer")
    return ops, sizes["target"]


def receptive_field(model: nn.Module, layer: str, input_size) -> ReceptiveField:
    """The exact receptive field of ``layer``'s units for inputs of ``input_size`` (H, W) or an int.

    Runs the model once on a blank image to list, in order, the convolutions and
    pools that run before ``layer``'s output, with each one's kernel, stride,
    dilation and padding (TensorFlow SAME padding of :class:`~cs_utils.models.Conv2dSame`
    depends on the size of its input, and puts the odd pixel after). Composing
    them: with ``j`` the distance in input pixels between neighbouring units
    (the product of strides so far), a layer with kernel ``k``, dilation ``d``,
    stride ``s`` and padding ``p`` before gives

        size += (k - 1) * d * j;   offset -= p * j;   j *= s.

    Residual connections that add the block's input (identity skips) do not
    widen the field, so a chain of layers is enough for VGG-like networks and
    EfficientNet. Returns a :class:`ReceptiveField`; ``.box(row, col)`` maps a
    unit to its input box, clipped to the image.
    """
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)):
        raise ValueError(f"input_size must be a positive int or an (H, W) pair, got {input_size!r}")
    input_size = tuple(input_size)
    ops, output_size = _spatial_ops_before(model, layer, input_size)
    ### BEGIN SOLUTION
    size, stride, offset = [1, 1], [1, 1], [0, 0]
    for kernel, step, dilation, pad in ops:
        for d in range(2):
            size[d] += (kernel[d] - 1) * dilation[d] * stride[d]
            offset[d] -= pad[d] * stride[d]
            stride[d] *= step[d]
    return ReceptiveField(tuple(size), tuple(stride), tuple(offset), input_size, tuple(output_size))
    ### END SOLUTION


# --------------------------------------------------------------------------- maximally activating patches

@dataclass(frozen=True)
class TopActivations:
    """For each channel (row), the top-k units: ``value``, ``image`` index, ``row``, ``col`` (all (C, k))."""

    layer: str
    channels: tuple[int, ...]
    value: torch.Tensor
    image: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor


def top_activations(model: nn.Module, images: torch.Tensor, layer: str, channels, *, k: int = 9,
                    one_per_image: bool = True, groups=None, field: ReceptiveField | None = None,
                    batch_size: int = 32, progress: bool = True) -> TopActivations:
    """The ``k`` largest activations of each channel of ``layer`` over all ``images``.

    Every image goes through the model (eval mode, restored after; the forward
    pass stops after ``layer``). With ``one_per_image`` (default) each image
    contributes at most one unit per channel (its largest), so the top ``k``
    come from ``k`` different images; ``groups`` (one id per image, e.g. the
    photo each crop came from) allows at most one unit per group instead.
    ``field``: the layer's :class:`ReceptiveField` for these images; when given,
    only units whose whole field lies inside the image count (units at the
    border also see the padding, and some channels respond to its edge).
    Returns a :class:`TopActivations`.
    """
    check_image(images, "images")
    k = _check_positive_int(k, "k")
    batch_size = _check_positive_int(batch_size, "batch_size")
    channels = [int(c) for c in ([channels] if isinstance(channels, int) else channels)]
    if not channels:
        raise ValueError("channels is empty: name at least one channel")
    if groups is not None:
        groups = torch.as_tensor(groups).reshape(-1).cpu()
        if len(groups) != len(images):
            raise ValueError(f"groups needs one id per image ({len(images)}), got {len(groups)}")
        one_per_image = True
    if field is not None and field.input_size != tuple(images.shape[-2:]):
        raise ValueError(f"the receptive field was computed for {field.input_size} inputs but the images "
                         f"are {tuple(images.shape[-2:])}")
    _as_names([layer])
    get_layer(model, layer)
    device = next(model.parameters()).device
    per_image_best, per_image_where, all_maps = [], [], []
    map_width = 0
    starts = range(0, len(images), batch_size)
    with torch.no_grad(), evaluating(model):
        for i in _progress(starts, total=len(starts), desc=f"activations of {layer}", enabled=progress):
            out = extract_features(model, images[i:i + batch_size].to(device), [layer])[layer]
            if out.dim() != 4:
                raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}, not a spatial map "
                                 "(N, C, H, W); pick a convolutional layer")
            bad = [c for c in channels if not 0 <= c < out.shape[1]]
            if bad:
                raise IndexError(f"channels {bad} do not exist: {layer!r} has {out.shape[1]} channels "
                                 f"(0..{out.shape[1] - 1})")
            maps = out[:, channels].float().cpu()                      # (B, C, H, W)
            if field is not None:
                maps = maps.masked_fill(~_inside_mask(field, maps.shape[-2:]), -math.inf)
            map_width = maps.shape[-1]
            if one_per_image:
                best, where = maps.flatten(2).max(2)                   # (B, C)
                per_image_best.append(best)
                per_image_where.append(where)
            else:
                all_maps.append(maps)
    if not starts:
        raise ValueError("no images: images has batch size 0")
    if one_per_image:
        best = torch.cat(per_image_best).T                             # (C, N)
        where = torch.cat(per_image_where).T
        ids = groups if groups is not None else torch.arange(best.shape[1])
        available = len(torch.unique(ids))
        if k > available:
            raise ValueError(f"k={k} but there are only {available} images (one unit per "
                             f"{'group' if groups is not None else 'image'})")
        picks = []
        for row in best:
            chosen, seen = [], set()
            for index in torch.argsort(row, descending=True, stable=True).tolist():
                if int(ids[index]) not in seen:
                    seen.add(int(ids[index]))
                    chosen.append(index)
                    if len(chosen) == k:
                        break
            picks.append(chosen)
        image = torch.tensor(picks)
        value, flat_pos = best.gather(1, image), where.gather(1, image)
    else:
        maps = torch.cat(all_maps)                                     # (N, C, H, W)
        n, c, h, w = maps.shape
        flat = maps.permute(1, 0, 2, 3).reshape(c, -1)
        if k > flat.shape[1]:
            raise ValueError(f"k={k} but there are only {flat.shape[1]} units per channel")
        value, index = flat.topk(k, dim=1)
        image, flat_pos = index // (h * w), index % (h * w)
    if torch.isinf(value).any():
        raise ValueError(f"fewer than k={k} units have their whole receptive field inside the image; "
                         "use larger images, a shallower layer or field=None")
    return TopActivations(layer, tuple(channels), value, image, flat_pos // map_width, flat_pos % map_width)


def _inside_mask(field: ReceptiveField, shape) -> torch.Tensor:
    """(H, W) bool: units whose whole receptive field lies inside the image."""
    masks = []
    for d in range(2):
        start = field.offset[d] + torch.arange(shape[d]) * field.stride[d]
        masks.append((start >= 0) & (start + field.size[d] <= field.input_size[d]))
    return masks[0][:, None] & masks[1][None, :]


def crop_patches(images: torch.Tensor, top: TopActivations, field: ReceptiveField, *,
                 fill: float = 0.5) -> torch.Tensor:
    """The receptive-field patch of every unit in ``top``: (C, k, 3, size_h, size_w).

    Each patch is the exact input box of its unit; where the box reaches past
    the image border (padding), the patch is filled with ``fill`` (grey), so
    every patch shows the unit's field at the same scale and position.
    """
    check_image(images, "images")
    if tuple(images.shape[-2:]) != field.input_size:
        raise ValueError(f"the receptive field was computed for {field.input_size} inputs but the images "
                         f"are {tuple(images.shape[-2:])}")
    c, k = top.value.shape
    out = torch.full((c, k, 3, *field.size), float(fill), dtype=images.dtype, device=images.device)
    for i in range(c):
        for j in range(k):
            r, col = int(top.row[i, j]), int(top.col[i, j])
            top_px, left, bottom, right = field.box(r, col, clip=True)
            full_top, full_left, _, _ = field.box(r, col, clip=False)
            dy, dx = top_px - full_top, left - full_left
            out[i, j, :, dy:dy + bottom - top_px, dx:dx + right - left] = \
                images[int(top.image[i, j]), :, top_px:bottom, left:right]
    return out
