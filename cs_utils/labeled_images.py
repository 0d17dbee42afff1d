"""Labelled image sets, offline: Fashion-MNIST if its Debian package is installed, else scikit-learn digits.

* :func:`load_labeled_images` gives a :class:`LabeledImages` (greyscale images
  (N, 1, H, W) in [0, 1], integer labels, class names), optionally a random
  subset and resized;
* :data:`FASHION_MNIST_DIR` is where the Debian package ``dataset-fashion-mnist``
  installs its files, :data:`FASHION_MNIST_CLASSES` their class names; the files
  are read with a small reader of the IDX format (MNIST's).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .validation import positive_int

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "LabeledImages",
    "load_labeled_images",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs its files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass(frozen=True)
class LabeledImages:
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


def load_labeled_images(n: int | None = None, *, size: int | None = None, dataset: str = "auto",
                         split: str = "test", root=None,
                         generator: torch.Generator | None = None) -> LabeledImages:
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
        n = positive_int(n, "n")
    if size is not None:
        size = positive_int(size, "size")
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
    return LabeledImages(images.contiguous(), labels_t.contiguous(), class_names, name, source)
