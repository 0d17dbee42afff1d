"""Class visualization: images that a network's units respond to most (gradient ascent on the pixels).

Simonyan et al. (2014) maximise the unnormalised score ``s_c(I) - lambda * ||I||^2`` of a
class ``c`` over the image ``I``; Yosinski et al. (2015) add blur, jitter and clipping;
Olah et al. (2017) change the parameterisation (a decorrelated Fourier basis) and add
random transforms, which gives far more natural images; Fel et al. (2023, MACO) fix the
spectrum's magnitude to that of photos and optimise only its phase. The recipe ``"natural"``
keeps Olah et al.'s parameterisation but fixes the contrast; the default, ``"clear"``, adds a
penalty on its milky veil (pale areas covered in fine coloured speckle, :class:`MilkPenalty`).

Everything here is a thin layer over :func:`cs_utils.optimize.optimize_image`:

* objectives (``x -> loss to minimize``) come from :mod:`cs_utils.objectives`
  (``class_score``, ``channel``, ``neuron``, ``direction``, ...; they add and scale);
* :func:`class_visualization`: one call with a recipe (:data:`RECIPES`; the default,
  ``"clear"``, was chosen by measuring clipped pixels, high frequencies, the milky veil, neon
  colours and recognition by a second network, and by looking; see ``benchmarks/bench_class_viz.py`` and
  :mod:`cs_utils.image_stats`);
* :func:`class_visualization_step`: one CS231n update written out by hand (an exercise).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from . import objectives, validation
from .blur import mirrored_blur
from .engine.folding import gradient_network
from .hooks import evaluating
from .image_stats import photo_amplitude_spectrum
from .objectives import Objective
from .optimize import optimize_image, switch_off_after
from .parameterizations import FourierImage, SpectralPhaseImage, color_basis
from .redirected_relu import redirected_relu_gradients
from .regularizers import GaussianBlur, L2Penalty, Regularizer
from .runtime import model_device
from .transforms import Compose, Jitter, Pad, RandomCrops, RandomRotate, RandomScale, Views
from .validation import model_input, validate_image

__all__ = [
    "DEFAULT_RECIPE",
    "MilkPenalty",
    "RECIPES",
    "RECIPE_STEPS",
    "class_visualization",
    "class_visualization_step",
    "stretch_contrast",
]


# --------------------------------------------------------------------------- the CS231n step (exercise)

def class_visualization_step(model: nn.Module, img: torch.Tensor, target: int, *,
                             learning_rate: float = 0.1, l2_reg: float = 3e-2) -> torch.Tensor:
    """One gradient-ascent step of CS231n's class visualization, returned as a new image.

    Ascends ``s_target(img) - l2_reg * ||img - 0.5||^2`` (the L2 penalty pulls pixels to
    mid-grey, the zero of the network's [-1, 1] input) with a plain gradient step:
    ``img + learning_rate * d/d img (...)``. Not clamped and without blur or jitter:
    :func:`class_visualization` adds those.
    """
    img = model_input(model, img, "img")   # a checked, detached copy in the model's device and dtype
    targets = validation.class_indices(target, img.shape[0], classes=validation.num_classes(model))
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
             scales=(0.8, 0.9, 1.0, 1.1, 1.2), degrees=tuple(range(-10, 11)), final_jitter=4,
             normalize=False):
    """Olah et al.'s recipe: a decorrelated-colour Fourier parameterisation (``decay``: how strongly
    high frequencies are damped; ``scale``: contrast) and random pad, jitter, scale and rotation
    at every step, optimised with Adam."""
    parameterization = FourierImage(shape, decay=decay, scale=scale, normalize=normalize, generator=generator,
                                    device=device)
    transforms = [Compose(Pad(pad, mode="constant", value=0.5), Jitter(jitter, mode="crop"),
                          RandomScale(scales), RandomRotate(degrees), Jitter(final_jitter, mode="crop"))]
    return dict(parameterization=parameterization, optimizer="adam", lr=lr, regularizers=[],
                transforms=transforms)


def _maco(shape, generator, device, *, lr=0.05, contrast=2.0, crops=2, crop_scale=(0.6, 1.0), canvas=1.0,
          noise=0.02):
    """MACO (Fel et al. 2023): optimise only the phase of the spectrum, its magnitude fixed to the mean
    spectrum of the offline photos (in decorrelated colour), a sigmoid instead of clamping; each
    step the network sees ``crops`` random crops (``crop_scale`` of the side) of a canvas
    ``canvas`` times the image's side, resized with antialiasing, plus a little noise."""
    n, _, h, w = shape
    side = round(h * canvas)
    magnitude = photo_amplitude_spectrum(side, color_transform=torch.linalg.inv(color_basis()))
    parameterization = SpectralPhaseImage((n, 3, side, side), magnitude, contrast=contrast,
                                          generator=generator, device=device)
    return dict(parameterization=parameterization, optimizer="adam", lr=lr, regularizers=[],
                transforms=[RandomCrops(crops, crop_scale, size=h, noise=noise)], output_size=(h, w))


def _natural(shape, generator, device, *, lr=0.05, decay=1.5, contrast=3.5, pad=16, jitter=32,
             scales=(0.8, 0.9, 1.0, 1.1, 1.2), degrees=tuple(range(-10, 11)), final_jitter=4, views=1,
             redirect=0.0):
    """The Fourier recipe with the contrast fixed: the decorrelated image is standardised per image and
    squashed by ``sigmoid(contrast * .)``, so nothing is clamped and large areas cannot blow out; the
    jitter (32 px) is at least the network's total stride, so no pattern can lock onto the stride grid.

    ``views``: independently transformed copies per step, the objective averaged over them
    (:class:`cs_utils.transforms.Views`); ``redirect``: the share of the first steps with redirected
    ReLU gradients (:mod:`cs_utils.redirected_relu`). Neither is on by default: measured on
    EfficientNet-Lite0, redirecting every unit for the first fifth of the steps gave every class the
    same image, and 4 views did not remove the milky veil; nor did adding Lite2's class score to the
    objective (``benchmarks/README.md``)."""
    kwargs = _fourier(shape, generator, device, lr=lr, decay=decay, scale=contrast, pad=pad, jitter=jitter,
                      scales=scales, degrees=degrees, final_jitter=final_jitter, normalize=True)
    if views != 1:
        kwargs["transforms"] = [Views(views, *kwargs["transforms"])]
    return dict(kwargs, redirect=redirect)


def _smooth_color(shape, generator, device, *, lr=0.05, decay=(1.5, 2.0, 2.0), contrast=3.0,
                  color=0.7, pad=16, jitter=32, scales=(0.8, 0.9, 1.0, 1.1, 1.2),
                  degrees=tuple(range(-10, 11)), final_jitter=4):
    """The natural recipe with brightness and colour set apart, as in photos: each decorrelated channel
    is standardised on its own, the two colour channels to ``color`` times the luminance's standard
    deviation, and their spectrum decays faster (``decay``: luminance, colour, colour), so colour is
    smooth where brightness is sharp. Neither the fine coloured speckle of the pale areas (the milky
    veil) nor neon colours can grow, since the optimiser sets only where brightness and colour go."""
    parameterization = FourierImage(shape, decay=decay, scale=contrast, normalize="channels",
                                    channel_std=(1.0, color, color), generator=generator, device=device)
    transforms = [Compose(Pad(pad, mode="constant", value=0.5), Jitter(jitter, mode="crop"),
                          RandomScale(scales), RandomRotate(degrees), Jitter(final_jitter, mode="crop"))]
    return dict(parameterization=parameterization, optimizer="adam", lr=lr, regularizers=[],
                transforms=transforms)


class MilkPenalty(Regularizer):
    """``weight * mean(paleness * speckle)`` over each image's pixels, summed over the batch: the milky
    veil of :func:`cs_utils.image_stats.milky_share` made smooth. ``paleness`` is
    ``relu(min(r, g, b) - threshold)``; ``speckle`` the colour's fine detail (the opponent channels
    ``r - g`` and ``(r + g) / 2 - b`` minus their Gaussian blur of sigma 1 pixel, its length per
    pixel), averaged locally (Gaussian, sigma 2). Clean white (a daisy's petals, a zebra's stripes)
    and coloured detail in darker areas cost nothing; only pale areas covered in coloured speckle do."""

    def __init__(self, weight: float, threshold: float = 0.5):
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.weight, self.threshold = float(weight), float(threshold)

    def penalty(self, x):
        rg = x[:, 0] - x[:, 1]
        yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
        opponent = torch.stack([rg, yb], dim=1)
        detail = (opponent - mirrored_blur(opponent, 1.0)).pow(2).sum(dim=1, keepdim=True).add(1e-12).sqrt()
        speckle = mirrored_blur(detail, 2.0)[:, 0]
        paleness = torch.relu(x.amin(dim=1) - self.threshold)
        return self.weight * (paleness * speckle).mean(dim=(-2, -1)).sum()


def _clear(shape, generator, device, *, milk=2000.0, views=1, lr=0.05, decay=1.5, contrast=3.5, pad=16,
           jitter=32, scales=(0.8, 0.9, 1.0, 1.1, 1.2), degrees=tuple(range(-10, 11)), final_jitter=4,
           redirect=0.0):
    """The natural recipe without its milky veil: a penalty on pale areas covered in coloured speckle
    (:class:`MilkPenalty`, ``milk`` its weight), so the optimiser darkens them or smooths their colour;
    clean white and colour elsewhere are free. Other settings as for "natural"."""
    kwargs = _natural(shape, generator, device, lr=lr, decay=decay, contrast=contrast, pad=pad,
                      jitter=jitter, scales=scales, degrees=degrees, final_jitter=final_jitter, views=views,
                      redirect=redirect)
    kwargs["regularizers"] = [MilkPenalty(milk)] if milk else []
    return kwargs


RECIPES = {"clear": _clear, "cs231n": _cs231n, "fourier": _fourier, "maco": _maco, "natural": _natural,
           "smooth_color": _smooth_color}
#: Each recipe's own number of steps (at 224 px), used when ``steps`` is not given.
RECIPE_STEPS = {"clear": 256, "cs231n": 200, "fourier": 256, "maco": 256, "natural": 256, "smooth_color": 256}
#: The recipe :func:`class_visualization` uses by default. "clear" and "smooth_color" keep their
#: class images inside the offline photos' milky share and vivid chroma while Lite2 still ranks
#: their class first; "clear"'s are darker and more colourful than "natural"'s, without its milky
#: veil, and easier to name (a goldfish, monarch wings); "smooth_color"'s are grayer, muted and
#: harder to name (a bluish daisy, a strawberry hardly red) (``benchmarks/bench_class_viz.py``,
#: ``benchmarks/README.md``).
DEFAULT_RECIPE = "clear"


def class_visualization(model: nn.Module, target, *, steps: int | None = None, recipe: str = DEFAULT_RECIPE,
                        image_size: int | None = None, batch: int = 1,
                        generator: torch.Generator | None = None, progress: bool = True, **settings):
    """An image that maximises ``target`` for ``model``: gradient ascent on the pixels.

    ``target``: a class index (ascends the unnormalised class score) or any objective
    ``x -> loss to minimise`` (from :mod:`cs_utils.objectives`: ``channel``, ``neuron``,
    ``direction``, ``diversity``, sums of them, ...). ``recipe``:

    * ``"clear"`` (default): "natural" with a penalty on pale areas covered in fine coloured speckle
      (:class:`MilkPenalty`): no milky veil, clean white kept, darker and more colourful;
    * ``"natural"``: a decorrelated-colour Fourier parameterisation whose contrast is
      fixed (the whole decorrelated image standardised, then a sigmoid: about 1% of pixels
      clipped, not 20%), random pad, 32-px jitter, scale and rotation at every step, Adam; its
      pale areas carry fine coloured speckle (:func:`cs_utils.milky_share`);
    * ``"smooth_color"``: the same with the luminance and colour channels standardised each on
      its own (colour at 0.7 of the luminance's spread) and a colour spectrum decaying faster
      (1/f^2 against 1/f^1.5): no milk and no neon by the numbers, but gray and muted;
    * ``"fourier"``: Olah et al.'s recipe as first used here (free contrast: bright, often
      clipped);
    * ``"maco"``: MACO, only the phase of a photo spectrum is optimised, random crops;
    * ``"cs231n"``: raw pixels from grey noise, SGD, L2 penalty, blur every few steps, jitter.

    ``steps`` defaults to the recipe's own (:data:`RECIPE_STEPS`). ``settings`` override the
    recipe's settings (e.g. ``l2=0``, ``blur_sigma=0``, ``jitter=0``, ``lr=...`` for "cs231n";
    ``decay``, ``scale``, ``scales``, ``degrees`` for "fourier"; ``contrast``, ``jitter`` for
    "natural"; ``milk`` for "clear"; ``decay``, ``contrast``, ``color`` for "smooth_color"; for
    "natural" and "clear" also ``views`` (transformed copies per step, the objective averaged),
    ``redirect`` (the share of first steps with redirected ReLU gradients,
    :mod:`cs_utils.redirected_relu`)) or are passed to
    :func:`optimize_image` (``transforms``, ``callback``, ...; ``regularizers`` are added to the
    recipe's own). ``image_size``
    defaults to the model's native size. Returns ``(image, History)``; the image
    (``(batch, 3, H, W)`` in [0, 1]) is on the model's device.

    The objective's models run with their batch norm folded into the convolutions
    (:func:`cs_utils.engine.folding.gradient_network`: the same layers, a faster backward; a model
    with hooks runs as it is), and the caller's model is left as it was.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if isinstance(target, Objective) or callable(target):
        objective = target
    else:
        objective = objectives.class_score(model, target)
    size = int(image_size or getattr(model, "native_image_size", 224))
    steps = RECIPE_STEPS[recipe] if steps is None else steps
    device = model_device(model)
    make = RECIPES[recipe]
    names = set(inspect.signature(make).parameters) - {"shape", "generator", "device"}
    recipe_settings = {k: settings.pop(k) for k in list(settings) if k in names}
    kwargs = make((batch, 3, size, size), generator, device, **recipe_settings)
    output_size = kwargs.pop("output_size", None)
    redirect = float(kwargs.pop("redirect", 0.0))
    if "regularizers" in settings:          # added to the recipe's own (the clear recipe's MilkPenalty)
        kwargs["regularizers"] = [*kwargs.get("regularizers", []), *settings.pop("regularizers")]
    kwargs.update(settings)
    desc = getattr(objective, "name", None)
    redirect_steps = round(redirect * steps)
    if isinstance(objective, Objective) and not redirect_steps:
        # every model the objective reads, with batch norm folded in (the same layers, a faster backward);
        # redirected gradients change the model's own ReLU modules, so then it runs as it is
        objective = objective.on_networks({key: gradient_network(net, keep=layers)
                                           for key, (net, layers) in objective.models().items()})
    redirecting = redirected_relu_gradients(model) if redirect_steps else contextlib.nullcontext()
    with evaluating(model), redirecting as redirected:
        if redirect_steps:
            kwargs["callback"] = switch_off_after(redirected, redirect_steps, kwargs.get("callback"))
        image, history = optimize_image(objective, steps=steps, generator=generator, progress=progress,
                                        desc=desc, **kwargs)
    if output_size is not None and tuple(image.shape[-2:]) != tuple(output_size):
        image = torch.nn.functional.interpolate(image, size=output_size, mode="bilinear", align_corners=False,
                                                antialias=True).clamp(0, 1)
    return image, history


def stretch_contrast(x: torch.Tensor, *, percentile: float = 99.5) -> torch.Tensor:
    """For display: scale each image's deviation from mid-grey so that its ``percentile``-th largest
    absolute deviation reaches 0 or 1 (faint raw-pixel visualizations become visible); clamped."""
    validate_image(x)
    dev = x.detach() - 0.5
    scale = torch.quantile(dev.abs().flatten(1), percentile / 100, dim=1).clamp_min(1e-6)
    return (0.5 + 0.5 * dev / scale.view(-1, 1, 1, 1)).clamp(0, 1)
