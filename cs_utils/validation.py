"""Input validation in one place: every public function validates its arguments with these.

One behaviour everywhere, and an error that says what to do:

* images: :func:`validate_image` (a float tensor (N, 3, H, W) in [0, 1], finite, with at
  least one image, not on the meta device) and :func:`model_input` (the same, then a
  detached copy in the model's device and floating dtype, so a float64 image works with
  a float32 model and the caller's tensor is never touched);
* models: :func:`validate_model`, :func:`model_dtype`, :func:`num_classes`;
* class targets: :func:`class_indices` (an int, a list, a numpy array or a tensor of
  integer class indices, one or one per image);
* layer names: :func:`validate_layer`, :func:`validate_layers`;
* numbers and sizes: :func:`positive_int`, :func:`non_negative_int`, :func:`int_pair`,
  :func:`pixel_size`, :func:`probability`.

This module imports nothing else from the package, so any module can use it. (In this project
"check" means an exercise's golden check: ``cs.check_exercise``, ``make check``, ``data/checks/``.)
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

__all__ = [
    "validate_image",
    "validate_layer",
    "validate_layers",
    "validate_model",
    "class_indices",
    "int_pair",
    "model_dtype",
    "model_input",
    "non_negative_int",
    "num_classes",
    "pixel_size",
    "positive_int",
    "probability",
]


# --------------------------------------------------------------------------- numbers and sizes

def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value, name: str) -> int:
    """``value`` as an int if it is an integer >= 1; a ``ValueError`` that names it otherwise."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int (at least 1), got {value!r}")
    return int(value)


def non_negative_int(value, name: str) -> int:
    """``value`` as an int if it is an integer >= 0; a ``ValueError`` that names it otherwise."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def int_pair(value, name: str) -> tuple[int, int]:
    """A positive int ``v`` as ``(v, v)``, or a (height, width) pair of positive ints as a tuple."""
    if _is_int(value):
        v = positive_int(value, name)
        return v, v
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a positive int (at least 1) or a (height, width) pair of positive "
                     f"ints, got {value!r}")


def pixel_size(value, name: str = "epsilon") -> float:
    """A size in pixel units of [0, 1] images (e.g. ``8/255``), as a float in [0, 1]."""
    if not isinstance(value, (numbers.Real, np.floating, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number in pixel units of [0, 1] images, e.g. 8/255")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} = {value} is not a size in pixel units of [0, 1] images; "
                         f"8 grey levels are 8/255 = {8 / 255:.4f}")
    return float(value)


def probability(value, name: str, *, allow_one: bool = True) -> float:
    """``value`` as a float in [0, 1] (or [0, 1) with ``allow_one=False``)."""
    ok = isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, bool) and (
        0 <= value <= 1 if allow_one else 0 <= value < 1)
    if not ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must be a probability in {interval}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- models

def validate_model(model) -> nn.Module:
    """``model`` if it is a ``torch.nn.Module`` whose parameters hold values (not on the meta device)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}; "
                        "cs_utils.load_model() gives the default network")
    for tensor in model.parameters():
        if tensor.is_meta:
            raise ValueError("the model's parameters are on the meta device and hold no values; "
                             "load its weights first (model.to_empty(device='cpu') and load_state_dict)")
        break
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s first floating parameter or buffer (float32 if it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def num_classes(model: nn.Module) -> int | None:
    """``out_features`` of ``model``'s last ``nn.Linear`` layer: its number of classes (None without one)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


# --------------------------------------------------------------------------- images

def validate_image(x, name: str = "x") -> torch.Tensor:
    """``x`` unchanged if it is a float tensor (N, 3, H, W), N >= 1, with finite values in [0, 1].

    Otherwise an error that says what to do: a ``TypeError`` for a non-tensor, a
    ``ValueError`` for a wrong shape or dtype, an empty batch, NaN or infinite values,
    values outside [0, 1], or a tensor on the meta device.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 3, H, W) in [0, 1], got {type(x).__name__}; "
                        "cs_utils.load_image makes one from a file, PIL image or array")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values; pass a real image tensor")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(x.shape)}; "
                         "x[None] adds a batch axis to a single (3, H, W) image")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 images); pass at least one image (N >= 1)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} has no pixels: its size is {x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; use x.float() / 255")
    values = x.detach()
    if not torch.isfinite(values).all():
        count = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{name} contains NaN or infinite values ({count} of {values.numel()}); "
                         "find where they come from, or replace them with torch.nan_to_num(x)")
    lo, hi = torch.aminmax(values)
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must hold values in [0, 1], got [{lo.item():.3g}, {hi.item():.3g}]; "
                         "divide 0..255 images by 255, or clamp with x.clamp(0, 1)")
    return x


def model_input(model: nn.Module, x, name: str = "x") -> torch.Tensor:
    """A checked, detached copy of the images ``x`` on ``model``'s device, in ``model``'s floating dtype.

    ``x`` itself is never changed; a float64 image given to a float32 model is converted
    (and the other way round), so the model never sees a dtype it cannot use.
    """
    validate_model(model)
    validate_image(x, name)
    for tensor in (*model.parameters(), *model.buffers()):
        device = tensor.device
        break
    else:
        device = x.device
    return x.detach().to(device=device, dtype=model_dtype(model), copy=True)


# --------------------------------------------------------------------------- class targets

_TARGET_HINT = "cs_utils.imagenet_index('name') finds an index"


def class_indices(target, n: int, *, classes: int | None = None, what: str = "target") -> torch.Tensor:
    """``target`` as a long tensor of ``n`` class indices on the CPU.

    ``target`` is one class index (an int, a numpy integer, a 0-d tensor) used for every
    image, or one index per image (a list, tuple, numpy array or 1-d tensor of integers).
    With ``classes`` (the model's number of classes, see :func:`num_classes`) every
    index must be below it. Errors: ``TypeError`` for a non-integer, ``ValueError`` for the
    wrong count, ``IndexError`` for a negative or too large index.
    """
    if isinstance(target, (bool, np.bool_, str, bytes)) or isinstance(target, (float, np.floating)):
        raise TypeError(f"{what} must be a class index (int) or one index per image, got {target!r}; "
                        f"{_TARGET_HINT}")
    if _is_int(target):
        values = torch.tensor([int(target)], dtype=torch.long)
    elif isinstance(target, (torch.Tensor, np.ndarray, list, tuple)):
        if isinstance(target, (list, tuple)) and any(not _is_int(v) for v in target):
            bad = next(v for v in target if not _is_int(v))
            raise TypeError(f"{what} must hold integer class indices, got {bad!r}")
        try:
            values = torch.as_tensor(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{what} must be a class index or a sequence of them, got "
                            f"{type(target).__name__}") from err
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{what} must hold integer class indices, got dtype {values.dtype}")
        if values.dim() > 1:
            raise ValueError(f"{what} must be one class index or one per image, "
                             f"got shape {tuple(values.shape)}")
        values = values.reshape(-1).long()
    else:
        raise TypeError(f"{what} must be a class index (int) or one index per image, "
                        f"got {type(target).__name__}; {_TARGET_HINT}")
    if values.numel() == 1:
        values = values.expand(n).clone()
    if values.numel() != n:
        raise ValueError(f"{what} has {values.numel()} class indices for {n} images; "
                         "give one, or one per image")
    if n:
        low, high = int(values.min()), int(values.max())
        if low < 0:
            raise IndexError(f"{what} class index {low} is negative; class indices start at 0")
        if classes is not None and high >= classes:
            raise IndexError(f"{what} class index {high} is out of range: the model's classes are "
                             f"0..{classes - 1}")
    return values


# --------------------------------------------------------------------------- layer names

def validate_layer(model: nn.Module, name) -> str:
    """``name`` if ``model`` has a submodule of that name; a ``KeyError`` listing close names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"layer names are strings such as 'blocks.10', got {type(name).__name__}")
    # the fast path walks the dotted name: this runs at every step of an optimisation, where
    # listing every module each time would be a noticeable share of an evaluation
    if name:
        try:
            model.get_submodule(name)
            return name
        except AttributeError:
            pass
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:  # fall back to names sharing the first component
        head = name.split(".")[0]
        close = [n for n in names if n.split(".")[0] == head][:5]
    hint = f" Closest valid names: {', '.join(repr(c) for c in close)}." if close else ""
    raise KeyError(f"{type(model).__name__} has no layer {name!r}.{hint} "
                   "cs_utils.hooks.layer_names(model) lists them all.")


def validate_layers(model: nn.Module, names, what: str = "layers") -> tuple[str, ...]:
    """One layer name or a non-empty list of them, each checked with :func:`validate_layer`, as a tuple."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Iterable):
        raise TypeError(f"{what} must be a layer name or a non-empty list of layer names, "
                        f"got {type(names).__name__}")
    names = list(names)
    if not names:
        raise ValueError(f"{what} must be a non-empty list of layer names; name at least one layer")
    return tuple(validate_layer(model, n) for n in names)
