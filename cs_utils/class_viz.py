"""Class visualization: images that a network's units respond to most (gradient ascent on the pixels).

Simonyan et al. (2014) maximise the unnormalised score ``s_c(I) - lambda * ||I||^2`` of a
class ``c`` over the image ``I``; Yosinski et al. (2015) add blur, jitter and clipping;
Olah et al. (2017) change the parameterisation (a decorrelated Fourier basis) and add
random transforms, which gives far more natural images.

Everything here is a thin layer over :func:`cs_utils.optimize.optimize_image`:

* objectives (``x -> loss to minimise``): :func:`class_score_objective`,
  :func:`channel_objective`, :func:`neuron_objective`, :func:`representation_objective`;
  they add (``a + b``) and scale (``0.5 * a``);
* :func:`class_visualization`: one call with a recipe (``"cs231n"`` or ``"fourier"``);
* :func:`class_visualization_step`: one CS231n update written out by hand (an exercise).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable

import torch
from torch import nn

from .checks import check_image, class_indices, num_classes
from .hooks import evaluating, extract_features, get_layer
from .optimize import (
    Compose,
    FourierImage,
    GaussianBlur,
    Jitter,
    L2Penalty,
    Pad,
    RandomRotate,
    RandomScale,
    optimize_image,
)

__all__ = [
    "Objective",
    "RECIPES",
    "channel_objective",
    "class_ranks",
    "class_score_objective",
    "class_visualization",
    "class_visualization_step",
    "neuron_objective",
    "representation_objective",
    "stretch_contrast",
]


class Objective:
    """A loss to minimise, ``objective(x) -> scalar``, with a name; objectives add and scale:
    ``class_score_objective(m, 1) + 0.1 * channel_objective(m, "blocks.10", 5)``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str):
        self.fn, self.name = fn, name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda x: self(x) + other(x), f"{self.name} + {other.name}")

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, numbers.Real):
            return NotImplemented
        return Objective(lambda x: factor * self(x), f"{factor:g} * ({self.name})")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _check_channel(model: nn.Module, layer: str, channel) -> int:
    get_layer(model, layer)  # a clear KeyError for a wrong name
    if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or channel < 0:
        raise TypeError(f"channel must be a non-negative int, got {channel!r}")
    return int(channel)


def _layer_output(model: nn.Module, x: torch.Tensor, layer: str, channel: int | None = None):
    out = extract_features(model, x, [layer])[layer]
    if channel is not None:
        if out.dim() < 2 or channel >= out.shape[1]:
            raise IndexError(f"channel {channel} is out of range: layer {layer!r} has "
                             f"{out.shape[1] if out.dim() > 1 else 0} channels (0..{out.shape[1] - 1})")
        out = out[:, channel]
    return out


def class_score_objective(model: nn.Module, target) -> Objective:
    """``-s_target(x)`` summed over the batch: ascend the *unnormalised* class score (not the
    softmax probability, which can rise by pushing other classes down)."""
    targets = class_indices(target, 1, classes=num_classes(model))

    def loss(x):
        scores = model(x)
        index = targets.to(scores.device).expand(scores.shape[0])
        return -scores.gather(1, index[:, None]).sum()

    return Objective(loss, f"class {int(targets[0])} score")


def channel_objective(model: nn.Module, layer: str, channel: int) -> Objective:
    """``-mean`` activation of one channel of ``layer`` over all positions (a "feature" visualization)."""
    channel = _check_channel(model, layer, channel)
    return Objective(lambda x: -_layer_output(model, x, layer, channel).mean(dim=(-2, -1)).sum(),
                     f"{layer} channel {channel}")


def neuron_objective(model: nn.Module, layer: str, channel: int, position=None) -> Objective:
    """``-activation`` of one unit: channel ``channel`` of ``layer`` at ``position`` = (row, column) of the
    layer's feature map (default: the centre), i.e. one neuron with a receptive field in the image."""
    channel = _check_channel(model, layer, channel)

    def loss(x):
        out = _layer_output(model, x, layer, channel)
        h, w = out.shape[-2:]
        row, col = (h // 2, w // 2) if position is None else position
        if not (0 <= row < h and 0 <= col < w):
            raise IndexError(f"position {(row, col)} is outside the {h}x{w} feature map of {layer!r}")
        return -out[:, row, col].sum()

    return Objective(loss, f"{layer} channel {channel} neuron")


def representation_objective(model: nn.Module, direction: torch.Tensor, layer: str = "pool", *,
                             cosine_power: float = 0.0) -> Objective:
    """Maximise the projection of the ``layer`` features (default ``"pool"``, the penultimate 1280-d
    representation that the classifier reads) on ``direction``: ``-<f(x), d>``, times
    ``cos(f(x), d) ** cosine_power`` (Olah et al.'s "direction" objective: with a power > 0 the
    image must point the same way as ``d``, not just have large features). ``direction`` may be the
    features of a photo (an image whose representation resembles the photo's) or a row of the
    classifier's weight matrix."""
    get_layer(model, layer)
    if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
        raise TypeError("direction must be a float tensor of the layer's feature size")
    target = direction.detach().reshape(1, -1)

    def loss(x):
        features = extract_features(model, x, [layer])[layer].flatten(1)
        if features.shape[1] != target.shape[1]:
            raise ValueError(f"direction has {target.shape[1]} values but layer {layer!r} gives "
                             f"{features.shape[1]} features per image; take it from the same layer")
        d = target.to(features)
        dot = (features * d).sum(dim=1)
        if cosine_power:
            cos = torch.nn.functional.cosine_similarity(features, d, dim=1).clamp_min(1e-4)
            dot = dot * cos ** cosine_power
        return -dot.sum()

    return Objective(loss, f"{layer} representation")


# --------------------------------------------------------------------------- the CS231n step (exercise)

def class_visualization_step(model: nn.Module, img: torch.Tensor, target: int, *,
                             learning_rate: float = 0.1, l2_reg: float = 3e-2) -> torch.Tensor:
    """One gradient-ascent step of CS231n's class visualization, returned as a new image.

    Ascends ``s_target(img) - l2_reg * ||img - 0.5||^2`` (the L2 penalty pulls pixels to
    mid-grey, the zero of the network's [-1, 1] input) with a plain gradient step:
    ``img + learning_rate * d/d img (...)``. Not clamped and without blur or jitter:
    :func:`class_visualization` adds those.
    """
    check_image(img, "img")
    targets = class_indices(target, img.shape[0], classes=num_classes(model))
    ### BEGIN SOLUTION
    x = img.detach().clone().requires_grad_(True)
    scores = model(x).gather(1, targets.to(x.device)[:, None]).sum()
    objective = scores - l2_reg * (x - 0.5).pow(2).sum()
    (grad,) = torch.autograd.grad(objective, [x])
    return (x + learning_rate * grad).detach()
    ### END SOLUTION


# --------------------------------------------------------------------------- recipes

def _cs231n(shape, generator, device, *, lr=0.1, l2=3e-2, blur_sigma=0.5, blur_every=10, jitter=16,
            noise=0.05):
    """Settings of CS231n's assignment, translated to images in [0, 1]: plain gradient ascent
    (SGD) with an L2 penalty, a Gaussian blur every few steps and random jitter, from grey noise."""
    init = (0.5 + noise * torch.randn(shape, generator=generator)).clamp(0, 1).to(device)
    regularizers = []
    if l2:
        regularizers.append(L2Penalty(l2))
    if blur_sigma and blur_every:
        regularizers.append(GaussianBlur(blur_sigma, every=blur_every))
    return dict(init=init, optimizer="sgd", lr=lr, regularizers=regularizers,
                transforms=[Jitter(jitter)] if jitter else [])


def _fourier(shape, generator, device, *, lr=0.05, decay=1.5, scale=1.0, pad=16, jitter=8,
             scales=(0.8, 0.9, 1.0, 1.1, 1.2), degrees=tuple(range(-10, 11)), final_jitter=4):
    """Olah et al.'s recipe: a decorrelated-colour Fourier parameterisation (``decay``: how strongly
    high frequencies are damped; ``scale``: contrast) and random pad, jitter, scale and rotation
    at every step, optimised with Adam."""
    parameterization = FourierImage(shape, decay=decay, scale=scale, generator=generator, device=device)
    transforms = [Compose(Pad(pad, mode="constant", value=0.5), Jitter(jitter, mode="crop"),
                          RandomScale(scales), RandomRotate(degrees), Jitter(final_jitter, mode="crop"))]
    return dict(parameterization=parameterization, optimizer="adam", lr=lr, regularizers=[],
                transforms=transforms)


RECIPES = {"cs231n": _cs231n, "fourier": _fourier}


def class_visualization(model: nn.Module, target, *, steps: int, recipe: str = "cs231n",
                        image_size: int | None = None, batch: int = 1,
                        generator: torch.Generator | None = None, progress: bool = True, **settings):
    """An image that maximises ``target`` for ``model``: gradient ascent on the pixels.

    ``target``: a class index (ascends the unnormalised class score) or any objective
    ``x -> loss to minimise`` (:func:`channel_objective`, :func:`neuron_objective`,
    :func:`representation_objective`, ...). ``recipe``: ``"cs231n"`` (raw pixels from grey
    noise, SGD, L2 penalty, blur every few steps, jitter) or ``"fourier"`` (Fourier
    parameterisation in decorrelated colour, random pad/jitter/scale/rotation, Adam).
    ``settings`` override the recipe's settings (e.g. ``l2=0``, ``blur_sigma=0``, ``jitter=0``,
    ``lr=...`` for "cs231n"; ``decay``, ``scale``, ``scales``, ``degrees`` for "fourier") or are
    passed to :func:`optimize_image` (``transforms``, ``regularizers``, ``callback``, ...).
    ``image_size`` defaults to the model's native size. Returns ``(image, History)``; the image
    (``(batch, 3, H, W)`` in [0, 1]) is on the model's device.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if isinstance(target, Objective) or callable(target):
        objective = target
    else:
        objective = class_score_objective(model, target)
    size = int(image_size or getattr(model, "native_image_size", 224))
    device = next(iter(model.parameters())).device
    make = RECIPES[recipe]
    names = set(inspect.signature(make).parameters) - {"shape", "generator", "device"}
    recipe_settings = {k: settings.pop(k) for k in list(settings) if k in names}
    kwargs = make((batch, 3, size, size), generator, device, **recipe_settings)
    kwargs.update(settings)
    desc = getattr(objective, "name", None)
    with evaluating(model):
        return optimize_image(objective, steps=steps, generator=generator, progress=progress,
                              desc=desc, **kwargs)


def class_ranks(model: nn.Module, images: torch.Tensor, targets, *, size: int | None = None) -> torch.Tensor:
    """Rank of each image's target class among ``model``'s scores (0 = top-1, < 5 = in the top 5),
    after resizing the images to ``size`` (default: the model's native size, bilinear)."""
    check_image(images, "images")
    targets = class_indices(targets, images.shape[0], classes=num_classes(model), what="targets")
    size = int(size or getattr(model, "native_image_size", images.shape[-1]))
    device = next(iter(model.parameters())).device
    x = images.detach().to(device)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad(), evaluating(model):
        scores = model(x)
    own = scores.gather(1, targets.to(device)[:, None])
    return (scores > own).sum(dim=1).cpu()


def stretch_contrast(x: torch.Tensor, *, percentile: float = 99.5) -> torch.Tensor:
    """For display: scale each image's deviation from mid-grey so that its ``percentile``-th largest
    absolute deviation reaches 0 or 1 (faint raw-pixel visualizations become visible); clamped."""
    check_image(x)
    dev = x.detach() - 0.5
    scale = torch.quantile(dev.abs().flatten(1), percentile / 100, dim=1).clamp_min(1e-6)
    return (0.5 + 0.5 * dev / scale.view(-1, 1, 1, 1)).clamp(0, 1)
