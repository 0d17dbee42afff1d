"""DeepDream and feature inversion: images made by optimising pixels against one layer.

Both are thin functions over :func:`cs_utils.optimize_image` with an objective from
:mod:`cs_utils.objectives` (``layer_l2`` and ``feature_match``), which reads the layer
with :func:`cs_utils.extract_features`, so the forward pass stops at that layer.

* :func:`deepdream` (Mordvintsev et al. 2015) *amplifies* what a layer already
  sees: it ascends ``0.5 * ||phi(x)||^2``, whose gradient at the layer is the
  activation itself, with a normalised gradient, a random roll (jitter) every
  step and pixels kept in [0, 1], over an image pyramid from the smallest octave
  up, carrying the detail dreamed so far from octave to octave.
  :func:`deepdream_step` is one such update written out in full.
* :func:`invert_features` (Mahendran & Vedaldi 2015) *reconstructs* an image
  from its features: it minimises ``||phi(x*) - phi(x)||^2 / ||phi(x)||^2`` plus a
  total-variation prior; :func:`relative_feature_error` measures how close the
  features came.

Both run on :func:`cs_utils.engine.folding.gradient_network` of the model, the same function with
its batch norm folded into the convolutions (and channels-last weights on the CPU), made once per
model and kept for the next call: fewer layers to run backward through at every step. A model
with hooks is used as it is (the times and differences are in ``benchmarks/README.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import objectives
from .engine.folding import gradient_network
from .history import History
from .hooks import evaluating, extract_features
from .optimize import NormalizedGradient, optimize_image
from .regularizers import TVPenalty
from .runtime import model_device
from .transforms import Clamp, Jitter
from .validation import (
    model_dtype,
    model_input,
    non_negative_int,
    positive_int,
    validate_image,
    validate_layer,
)

__all__ = [
    "deepdream",
    "deepdream_step",
    "dream_octaves",
    "invert_features",
    "octave_sizes",
    "relative_feature_error",
    "roll_offsets",
]


def roll_offsets(jitter: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """A random (down, right) shift, each uniform in ``-jitter .. jitter``, drawn from ``generator``.

    Drawn exactly as :class:`cs_utils.transforms.Jitter` draws its roll, so one
    :func:`deepdream_step` equals one step of :func:`deepdream` with the same generator.
    """
    if jitter == 0:
        return 0, 0
    dy = int(torch.randint(-jitter, jitter + 1, (1,), generator=generator))
    dx = int(torch.randint(-jitter, jitter + 1, (1,), generator=generator))
    return dy, dx


def deepdream_step(model: nn.Module, x: torch.Tensor, layer: str, *, step_size: float = 0.01,
                   jitter: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """One DeepDream update of ``x`` (N, 3, H, W) in [0, 1] that amplifies ``layer``'s activation.

    1. roll ``x`` by the random shift ``(dy, dx) = roll_offsets(jitter, generator)`` (``torch.roll``
       over the height and width dimensions);
    2. run the model up to ``layer`` (``extract_features``) to get the activation ``a``;
    3. backpropagate ``0.5 * ||a||^2``: its gradient with respect to ``a`` is ``a`` itself,
       so pass ``a`` as the upstream gradient (``torch.autograd.grad(..., grad_outputs=...)``);
    4. divide the image gradient of each image by its mean absolute value and step uphill by
       ``step_size``;
    5. roll back by ``(-dy, -dx)`` and clip the pixels to [0, 1].

    Returns the new image, detached, on ``x``'s device; ``x`` itself is not changed.
    """
    image = model_input(model, x)      # a checked, detached copy on the model's device, in its dtype
    validate_layer(model, layer)          # a clear error for a wrong name, before any work
    dy, dx = roll_offsets(non_negative_int(jitter, "jitter"), generator)   # the random shift, drawn for you
    with evaluating(model):
        ### BEGIN SOLUTION
        rolled = torch.roll(image, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        activation = extract_features(model, rolled, [layer])[layer]
        (grad,) = torch.autograd.grad(activation, [rolled], grad_outputs=activation.detach())
        grad = grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
        stepped = rolled.detach() + step_size * grad
        return torch.roll(stepped, shifts=(-dy, -dx), dims=(2, 3)).clamp(0.0, 1.0).to(x.device, x.dtype)
        ### END SOLUTION


def octave_sizes(height: int, width: int, octaves: int, octave_scale: float,
                 min_size: int = 16) -> list[tuple[int, int]]:
    """The (height, width) of each octave, smallest first; the last one is ``(height, width)``.

    Octave ``k`` of ``octaves`` is the image shrunk by ``octave_scale ** (octaves - 1 - k)``
    (rounded to whole pixels). Raises if a shrunk octave would be under ``min_size`` pixels.
    """
    octaves = positive_int(octaves, "octaves")
    if not octave_scale >= 1.0:
        raise ValueError(f"octave_scale must be >= 1 (each octave this much bigger), got {octave_scale!r}")
    sizes = []
    for k in range(octaves):
        shrink = octave_scale ** (octaves - 1 - k)
        sizes.append((max(1, round(height / shrink)), max(1, round(width / shrink))))
    if octaves > 1 and min(sizes[0]) < min_size:
        raise ValueError(f"the smallest octave would be {sizes[0][0]}x{sizes[0][1]} pixels "
                         f"(under {min_size}); use fewer octaves, a smaller octave_scale or a bigger image")
    return sizes


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def dream_octaves(x: torch.Tensor, sizes: list[tuple[int, int]], dream_octave) -> torch.Tensor:
    """Run ``dream_octave(init, k) -> image`` on each octave of ``x``, smallest first, carrying detail.

    The detail of an octave is what dreaming added to it (dreamed image minus that
    octave's downscaled photo). It is upscaled and added to the next octave's photo,
    so the structure grown at a coarse scale is refined, not lost, at finer scales.
    Returns the dreamed image at the last (largest) size.
    """
    detail = None
    dreamed = x
    for k, size in enumerate(sizes):
        base = _resize(x, size)
        init = base if detail is None else (base + _resize(detail, size)).clamp(0.0, 1.0)
        dreamed = dream_octave(init, k)
        detail = dreamed - base
    return dreamed


def deepdream(model: nn.Module, x: torch.Tensor, layer: str, *, octaves: int = 3, octave_scale: float = 1.4,
              steps_per_octave: int = 20, step_size: float = 0.01, jitter: int = 32, progress: bool = True,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, History]:
    """DeepDream: amplify what ``layer`` already sees in the photo ``x`` (N, 3, H, W) in [0, 1].

    Ascends ``0.5 * ||phi(x)||^2`` of the layer's activation (forward pass stopped at
    ``layer``) with normalised-gradient steps ``x += step_size * g / mean|g|``, a random
    roll of up to ``jitter`` pixels before every step (from ``generator``) and pixels
    clipped to [0, 1]. The image is processed at ``octaves`` sizes, each ``octave_scale``
    times the previous, smallest first; the detail dreamed at one octave is upscaled and
    added to the next (see :func:`dream_octaves`). The objective is
    :func:`cs_utils.objectives.layer_l2`, run on :func:`cs_utils.optimize_image` with
    ``NormalizedGradient(step_size, "mean_abs")`` and ``Jitter(jitter, "roll")``. It does not
    call :func:`deepdream_step`, but each of its steps equals one :func:`deepdream_step` with an
    equally seeded generator (up to float rounding; the tests check it), so the exercise is
    what this loop does.

    Returns ``(image, history)``: the dream at ``x``'s size (detached, on ``x``'s device) and a
    :class:`History` whose ``objective`` is ``-0.5 * ||phi||^2`` per step (it grows with the
    octave's size) and whose ``extra["octave"]`` says which octave each step belongs to.
    """
    x = validate_image(x)
    validate_layer(model, layer)
    non_negative_int(jitter, "jitter")
    positive_int(steps_per_octave, "steps_per_octave")
    sizes = octave_sizes(x.shape[2], x.shape[3], octaves, octave_scale)
    history = History()
    net = gradient_network(model, keep=(layer,))   # batch norm folded in; layer's output as it was
    objective = objectives.layer_l2(net, layer)

    def dream_octave(init, k):
        size = "x".join(str(s) for s in init.shape[-2:])
        image, octave = optimize_image(objective, init, steps=steps_per_octave,
                                       optimizer=NormalizedGradient(step_size, "mean_abs"),
                                       transforms=[Jitter(jitter, "roll")], clamp=(0.0, 1.0),
                                       generator=generator, progress=progress,
                                       desc=f"{layer} octave {k + 1}/{len(sizes)} ({size})")
        history.loss.extend(octave.loss)
        history.objective.extend(octave.objective)
        history.extra.setdefault("octave", []).extend([k] * octave.steps)
        history.steps += octave.steps
        history.seconds += octave.seconds
        return image

    with evaluating(net):
        dreamed = dream_octaves(model_input(net, x), sizes, dream_octave)
    return dreamed.detach().to(x.device, x.dtype), history


def invert_features(model: nn.Module, x: torch.Tensor, layer: str, *, steps: int = 200,
                    tv_weight: float = 0.5, tv_beta: float = 2.0, optimizer="lbfgs", lr: float | None = None,
                    jitter: int = 0, init_noise: float = 0.05, progress: bool = True,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, History]:
    """Feature inversion (Mahendran & Vedaldi 2015): an image whose ``layer`` features match ``x``'s.

    Minimises, over the image ``x*`` (pixels kept in [0, 1]),

        ||phi(x*) - phi(x)||^2 / ||phi(x)||^2  +  tv_weight * TV_beta(x*) / (N * H * W)

    where ``phi`` is the activation at ``layer`` (forward pass stopped there) and
    ``TV_beta = sum ((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2)^(beta/2)`` (:func:`cs_utils.tv_loss`),
    taken per pixel so that one ``tv_weight`` suits every image size. The search starts from
    mid-grey plus Gaussian noise of std ``init_noise`` (from ``generator``). ``optimizer`` and
    ``lr`` go to :func:`cs_utils.optimize_image` (``"lbfgs"``: ``steps`` counts evaluations);
    ``jitter > 0`` rolls the image by up to that many pixels before each evaluation, which helps
    deep layers (use it with ``"adam"``).

    Returns ``(image, history)``; ``history.objective`` is the relative squared feature error at
    every step, ``history.extra["relative_feature_error"]`` the final
    ``||phi(x*) - phi(x)|| / ||phi(x)||`` of each image (:func:`relative_feature_error`).
    """
    x = validate_image(x)
    validate_layer(model, layer)
    positive_int(steps, "steps")
    non_negative_int(jitter, "jitter")
    if tv_weight < 0:
        raise ValueError(f"tv_weight must be >= 0, got {tv_weight}")
    device = model_device(model)
    n, _, h, w = x.shape
    net = gradient_network(model, keep=(layer,))   # batch norm folded in; layer's output as it was
    with evaluating(net):
        with torch.no_grad():
            target = extract_features(net, model_input(net, x), [layer])[layer].detach()
        objective = objectives.feature_match(net, layer, target)   # ||phi(x*) - phi(x)||^2 / ||phi(x)||^2
        noise = torch.randn(x.shape, generator=generator, dtype=model_dtype(model)) * init_noise
        init = (0.5 + noise).clamp(0.0, 1.0).to(device)
        regularizers = [TVPenalty(tv_weight / (n * h * w), beta=tv_beta)] if tv_weight > 0 else []
        # L-BFGS's line search may leave [0, 1] between steps: the model sees the pixels clamped.
        transforms = ([Jitter(jitter, "roll")] if jitter > 0 else []) + [Clamp(0.0, 1.0)]
        image, history = optimize_image(objective, init, steps=steps, lr=lr, optimizer=optimizer,
                                        transforms=transforms, regularizers=regularizers, clamp=(0.0, 1.0),
                                        generator=generator, progress=progress, desc=f"invert {layer}")
    error = relative_feature_error(net, image, x, layer)
    history.extra["relative_feature_error"] = error.tolist()
    return image.to(x.device, x.dtype), history


def relative_feature_error(model: nn.Module, image: torch.Tensor, x: torch.Tensor,
                           layer: str) -> torch.Tensor:
    """``||phi(image) - phi(x)|| / ||phi(x)||`` at ``layer``, one value per image: shape (N,)."""
    image, x = validate_image(image, "image"), validate_image(x)
    if image.shape != x.shape:
        raise ValueError(f"image and x must have the same shape, got {tuple(image.shape)} and "
                         f"{tuple(x.shape)}")
    validate_layer(model, layer)
    with torch.no_grad(), evaluating(model):
        both = torch.cat([model_input(model, image, "image"), model_input(model, x)])
        both = extract_features(model, both, [layer])[layer].flatten(1)
    found, target = both[: len(x)], both[len(x):]
    return ((found - target).norm(dim=1) / target.norm(dim=1).clamp(min=1e-12)).to(x.device)
