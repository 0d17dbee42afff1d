"""The style images: the project's fixed set of four, :data:`STYLE_NAMES`.

:func:`load_style` / :func:`style_images` load them with their frames and dark borders cropped
away (a Gram loss copies a frame's straight edges into every output). Any other image works as a
style through :func:`cs_utils.load_image`.
"""

from __future__ import annotations

import difflib
import functools

import torch

__all__ = ["STYLE_NAMES", "load_style", "style_images"]

#: The four style images, in a fixed order (the multi-style network's style index follows it).
STYLE_NAMES = ("starry_night", "hubble_deep_field", "immunohistochemistry", "retina")

# Region kept of each full-resolution image, (top, left, bottom, right) as fractions of the
# height and width, or whole pixels for the frame of the painting.
_CROPS = {
    "starry_night": 20,                       # the dark frame (~10 px) and the light band inside it
    "retina": (0.17, 0.17, 0.83, 0.83),       # the square inside the black disc around the fundus
}


def _check_style_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"style names are strings, one of {STYLE_NAMES}; got {type(name).__name__}")
    if name not in STYLE_NAMES:
        close = difflib.get_close_matches(name, STYLE_NAMES, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no style image called {name!r}.{hint} The style images are {STYLE_NAMES}; "
                       "any other image works as a style through cs_utils.load_image.")
    return name


@functools.lru_cache(maxsize=len(STYLE_NAMES))
def _cropped(name: str) -> torch.Tensor:
    from .image import load_image

    image = load_image(name)
    h, w = image.shape[-2:]
    crop = _CROPS.get(name)
    if isinstance(crop, int):
        image = image[..., crop:h - crop, crop:w - crop]
    elif crop is not None:
        top, left, bottom, right = crop
        image = image[..., round(top * h):round(bottom * h), round(left * w):round(right * w)]
    return image.contiguous()


def load_style(name: str, size=None, *, square: bool = False) -> torch.Tensor:
    """The style image ``name`` (one of :data:`STYLE_NAMES`) as a (1, 3, H, W) tensor in [0, 1].

    Frames and borders are cropped first (20 px on each side of Starry Night: its dark frame
    and the light band inside it; the black disc around the retina photo). ``size``: ``None``
    keeps the cropped full resolution; an int resizes the shorter side to ``size`` keeping the
    aspect ratio (a centre square of that side with ``square=True``); a ``(height, width)``
    pair resizes to exactly that. Each call returns a new tensor.
    """
    from .image import load_image

    image = _cropped(_check_style_name(name))
    if size is None:
        return image.clone()
    return load_image(image, size, crop=square)


def style_images(size=None, *, square: bool = False) -> dict[str, torch.Tensor]:
    """``{name: image}`` for every style in :data:`STYLE_NAMES`, in that order (see :func:`load_style`)."""
    return {name: load_style(name, size, square=square) for name in STYLE_NAMES}
