"""Feature vectors, nearest neighbours and 2-D embeddings: what does the network put together?

* :func:`compute_features` runs images through a model in batches and returns one
  feature vector per image; :func:`nearest_neighbours` searches a gallery (in pixel
  or feature space);
* :func:`gallery_with_copies` builds a :class:`Gallery` of photos with flipped and
  shifted copies, :func:`random_crops` and :func:`place_randomly` make moved and
  rescaled versions of images;
* :func:`embed_2d` (PCA or t-SNE from scikit-learn) and :func:`knn_accuracy`.

``nearest_neighbours`` is a graded exercise: this module imports only the
foundation modules, so the autograder can import it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hooks import evaluating, extract_features, get_layer
from .image import load_image
from .runtime import model_device, progress_bar
from .validation import model_dtype, non_negative_int, positive_int, validate_image

__all__ = [
    "Gallery",
    "compute_features",
    "embed_2d",
    "gallery_with_copies",
    "knn_accuracy",
    "nearest_neighbours",
    "place_randomly",
    "random_crops",
]


def _seed_from(generator: torch.Generator | None) -> int:
    """An int seed for libraries that take one (scikit-learn), drawn from ``generator``."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def compute_features(model: nn.Module, images: torch.Tensor, layer: str = "pool", *, batch_size: int = 32,
                     progress: bool = True, desc: str | None = None) -> torch.Tensor:
    """The output of ``layer`` for every image, flattened: (N, D), detached, on ``images``' device.

    Images go through the model (eval mode, restored after) in batches of
    ``batch_size``, and each forward pass stops after ``layer``. For EfficientNet
    ``"pool"`` gives the 1280-d penultimate features.
    """
    validate_image(images, "images")
    batch_size = positive_int(batch_size, "batch_size")
    get_layer(model, layer)
    device, dtype = model_device(model), model_dtype(model)
    chunks = []
    starts = range(0, len(images), batch_size)
    with torch.no_grad(), evaluating(model):
        for i in progress_bar(starts, total=len(starts), desc=desc or f"features of {layer}",
                              enabled=progress):
            out = extract_features(model, images[i:i + batch_size].to(device, dtype), [layer])[layer]
            chunks.append(out.reshape(out.shape[0], -1).to(images.device))
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
    k = positive_int(k, "k")
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
    size = positive_int(size, "size")
    shift = non_negative_int(shift, "shift")
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
    n = positive_int(n, "n")
    size = positive_int(size, "size")
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
    items = list(images) if not isinstance(images, torch.Tensor) else [images[i:i + 1]
                                                                       for i in range(len(images))]
    out, source = [], []
    for index, image in enumerate(items):
        image = validate_image(image if image.dim() == 4 else image[None], "images[i]")
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
    canvas_size = positive_int(canvas_size, "canvas_size")
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
    k = positive_int(k, "k")
    folds = positive_int(folds, "folds")
    if folds < 2:
        raise ValueError("folds must be at least 2")
    scores = cross_val_score(KNeighborsClassifier(k), x, y, cv=StratifiedKFold(folds))
    return float(scores.mean())
