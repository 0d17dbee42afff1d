"""Image I/O: everything becomes a float tensor (1, 3, H, W) in [0, 1], and back.

Pillow reads and resizes; the rest of the package never repeats this.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["load_image", "save_image", "to_numpy", "to_pil"]


def _open(source) -> Image.Image:
    from .data import catalog, sample_image

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if isinstance(source, str) and not path.exists():
            names = [s.name for s in catalog()]
            if source in names:  # the name of a sample photo
                path = sample_image(source).path
            else:
                close = difflib.get_close_matches(source, names, n=3, cutoff=0.6)
                hint = f"; sample photos with a similar name: {', '.join(close)}" if close else ""
                raise FileNotFoundError(
                    f"image file {source!r} does not exist (working directory: {os.getcwd()}) "
                    f"and is not the name of a sample photo{hint}. cs_utils.sample_images() lists those.")
        if not path.exists():
            raise FileNotFoundError(f"image file {str(path)!r} does not exist "
                                    f"(working directory: {os.getcwd()})")
        if path.is_dir():
            raise IsADirectoryError(f"{str(path)!r} is a folder, not an image file")
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"cannot read image file {str(path)!r}: {err}. "
                             "Is it a PNG/JPEG/... image and complete?") from err
    if isinstance(source, Image.Image):
        return source.copy()
    if isinstance(source, np.ndarray):
        return _array_to_pil(source)
    raise TypeError(f"cannot load an image from {type(source).__name__}; pass a file path, "
                    "a sample photo name, a PIL image, a numpy array or a tensor")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"array of shape {a.shape} looks channels-first; pass (H, W, C), "
                         "e.g. array.transpose(1, 2, 0)")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"integer image arrays must hold values in 0..255, got [{a.min()}, {a.max()}]")
        a = a.astype(np.uint8)
    else:
        raise ValueError(f"unsupported image array dtype {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels over white rather than over black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        return Image.fromarray(np.round(a / top * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _geometry(h: int, w: int, size, crop: bool):
    """(resized height, resized width, crop box (top, left, height, width) or None)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                     for s in size):
            raise ValueError(f"size must be an int or a (height, width) pair of positive ints, got {size!r}")
        return size[0], size[1], None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int or a (height, width) pair, got {size!r}")
    scale = size / min(w, h)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    box = ((new_h - size) // 2, (new_w - size) // 2, size, size) if crop else None
    return new_h, new_w, box


def _resize_pil(img: Image.Image, size, crop: bool) -> Image.Image:
    if size is None:
        return img
    new_h, new_w, box = _geometry(img.height, img.width, size, crop)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if box is not None:
        top, left, bh, bw = box
        img = img.crop((left, top, left + bw, top + bh))
    return img


def _resize_tensor(t: torch.Tensor, size, crop: bool) -> torch.Tensor:
    """Resize a (1, 3, H, W) float tensor like the PIL path (bicubic, antialiased)."""
    if size is None:
        return t
    new_h, new_w, box = _geometry(t.shape[-2], t.shape[-1], size, crop)
    if (new_h, new_w) != tuple(t.shape[-2:]):
        t = torch.nn.functional.interpolate(t, size=(new_h, new_w), mode="bicubic",
                                            align_corners=False, antialias=True).clamp_(0, 1)
    if box is not None:
        top, left, bh, bw = box
        t = t[..., top:top + bh, left:left + bw]
    return t


def _float_image(source) -> torch.Tensor:
    """A float tensor or float numpy image as a new (1, 3, H, W) float32 tensor in [0, 1]."""
    is_array = isinstance(source, np.ndarray)
    t = torch.from_numpy(np.array(source, dtype=np.float32)) if is_array else source.detach()
    t = t.to("cpu", torch.float32, copy=True)
    if is_array:  # (H, W) or (H, W, C) -> (C, H, W)
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            raise ValueError(f"array of shape {tuple(t.shape)} looks channels-first; pass (H, W, C), "
                             "e.g. array.transpose(1, 2, 0)")
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1) if t.dim() == 3 else t
    else:
        t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
        t = t[None] if t.dim() == 2 else t
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected one image, (H, W), (H, W, 3) or (H, W, 4) for arrays, (3, H, W) or "
                         f"(1, 3, H, W) for tensors; got shape {tuple(source.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("image contains NaN or infinite values")
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"float images must hold values in [0, 1], got [{t.min().item():.3g}, "
                         f"{t.max().item():.3g}]; divide 0..255 data by 255")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:  # transparency over white, as for files
        t = t[:3] * t[3:] + (1 - t[3:])
    return t.contiguous()[None]


def load_image(source, size=None, *, crop: bool = True) -> torch.Tensor:
    """Load an image as a float32 tensor of shape (1, 3, H, W) with values in [0, 1].

    ``source``: a file path, the name of a sample photo (see
    :func:`cs_utils.sample_images`), a PIL image, a numpy array (H, W), (H, W, 3)
    or (H, W, 4) of uint8 or floats in [0, 1], or a tensor. Greyscale and RGBA
    are converted to RGB (transparency over white).

    ``size``: ``None`` keeps the size; an int resizes the shorter side to ``size``
    and, with ``crop`` (default), centre-crops a ``size`` x ``size`` square (the
    usual classifier input); a ``(height, width)`` pair resizes to exactly that.
    """
    if isinstance(source, torch.Tensor) and not source.is_floating_point():  # 0..255 integers
        source = source.detach().cpu().numpy()
        source = source[0] if source.ndim == 4 and source.shape[0] == 1 else source
        source = source.transpose(1, 2, 0) if source.ndim == 3 else source
    if isinstance(source, torch.Tensor) or (
            isinstance(source, np.ndarray) and np.issubdtype(source.dtype, np.floating)):
        return _resize_tensor(_float_image(source), size, crop)  # no rounding to 8 bits
    img = _resize_pil(_to_rgb(_open(source)), size, crop)
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """An image tensor (1, 3, H, W) or (3, H, W) in [0, 1] as a float (H, W, 3) numpy array."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    t = x.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {t.shape[0]}; index it: x[i]")
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().copy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """An image tensor in [0, 1] as an 8-bit RGB PIL image (values rounded)."""
    return Image.fromarray(np.round(to_numpy(x) * 255).astype(np.uint8))


def save_image(x: torch.Tensor, path) -> Path:
    """Save an image tensor in [0, 1] as an 8-bit file (PNG keeps it lossless); returns the path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    to_pil(x).save(path)
    return path
