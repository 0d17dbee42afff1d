"""Attribution: which regions and pixels does a class score come from?

* :func:`class_activation_map`: CAM (Zhou et al. 2016), for networks that end in a global
  average pool and one linear layer: the class's weights times the last feature maps.
* :func:`grad_cam`: Grad-CAM (Selvaraju et al. 2017) at any layer: the feature maps weighted by
  the spatial mean of the score's gradient, summed over channels, ReLU.
  :func:`guided_grad_cam` multiplies it with :func:`cs_utils.guided_backprop`.
* :func:`integrated_gradients` (Sundararajan et al. 2017): the gradient averaged along the
  straight path from a baseline image (:func:`baseline_image`) to the image, times the
  difference, with the completeness error of the Riemann sum.
* :func:`smooth_grad` (Smilkov et al. 2017): any explainer's maps averaged over noisy copies.

On networks like EfficientNet-Lite (``... -> head -> pool -> dropout -> fc``) CAM and Grad-CAM
at the pool's input are the same map up to a factor: the gradient of the score with respect
to feature map k is ``w_k / (h * w)`` at every position, so Grad-CAM = ReLU(CAM) / (h * w).

Every function leaves the caller's model and tensors as it found them: images are checked and
copied by :func:`cs_utils.validation.model_input`, gradients come from ``torch.autograd.grad``
(nothing is written into ``.grad``), modes are restored by :func:`cs_utils.hooks.evaluating`, and
hooks live only inside a ``with`` block (also when an exception escapes). Results are detached,
on ``x``'s device, in ``x``'s dtype. Class scores are the unnormalised scores (before the
softmax), as in :func:`cs_utils.saliency_map`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .blur import gaussian_blur
from .engine.folding import gradient_network
from .explainers import gradient_batch_size, prepare, target_scores
from .hooks import evaluating, get_layer
from .saliency import guided_backprop, saliency_map
from .validation import class_indices, model_input, num_classes, positive_int, validate_image

__all__ = [
    "Attribution",
    "baseline_image",
    "class_activation_map",
    "global_pool",
    "grad_cam",
    "guided_grad_cam",
    "integrated_gradients",
    "smooth_grad",
]

class Attribution(NamedTuple):
    """Attribution maps and how well they add up to the score difference they explain."""

    maps: torch.Tensor                # (N, 3, H, W)
    completeness_error: torch.Tensor  # (N,): |sum(maps) - (S(x) - S(baseline))| / |S(x) - S(baseline)|


def _upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, h, w) maps resized bilinearly (``align_corners=False``) to ``size`` = (H, W)."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# --------------------------------------------------------------------------- the global pool

_NEEDS = ("a network that ends in a global average pool (an nn.AdaptiveAvgPool2d(1) module) followed by "
          "one nn.Linear layer that reads the pooled features, as EfficientNet-Lite's `pool` and `fc`")


def _is_global_pool(module: nn.Module) -> bool:
    size = getattr(module, "output_size", None)
    return isinstance(module, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])


def global_pool(model: nn.Module) -> str | None:
    """The name of ``model``'s last global average pool (``nn.AdaptiveAvgPool2d(1)``), or None.

    Its input is the last feature maps: the layer CAM reads and Grad-CAM uses by default
    (``"pool.0"`` in EfficientNet-Lite, whose input is the output of ``head``).
    """
    names = [name for name, module in model.named_modules() if name and _is_global_pool(module)]
    return names[-1] if names else None


@contextlib.contextmanager
def _hooked(module: nn.Module, hook, *, pre: bool) -> Iterator[None]:
    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _Captured:
    """What :func:`_feature_leaf` captured: ``features``, the layer's output as a leaf tensor."""

    def __init__(self, what: str):
        self.what, self.leaf = what, None

    @property
    def features(self) -> torch.Tensor:
        if self.leaf is None:
            raise RuntimeError(f"{self.what} did not run in the forward pass; pick a layer that forward() "
                               "calls")
        return self.leaf


@contextlib.contextmanager
def _feature_leaf(model: nn.Module, layer: str | None) -> Iterator[_Captured]:
    """Inside the block, a forward pass stores the layer's output (with ``layer=None``: the global
    pool's input) in ``captured.features`` as a leaf tensor that requires grad, and lets the rest
    of the network run on a copy of it: ``torch.autograd.grad(score, [captured.features])`` then
    backpropagates no further than the layer. If the layer runs several times, the last call counts."""
    if layer is None:
        layer = global_pool(model)
        if layer is None:
            raise ValueError(f"grad_cam's default layer is the input of the global average pool, and "
                             f"{type(model).__name__} has none; name a layer with (N, C, h, w) output, "
                             f"e.g. grad_cam(model, x, target, layer='...') "
                             f"(cs_utils.hooks.layer_names(model) lists them)")
        pre, what = True, f"the input of the global pool {layer!r}"
    else:
        pre, what = False, f"layer {layer!r}"
    module = get_layer(model, layer)   # unknown names raise a KeyError listing close ones
    captured = _Captured(what)

    def leaf(tensor):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"Grad-CAM needs feature maps of shape (N, C, h, w); {what} gives {shape}. "
                             "Pick a convolutional layer (cs_utils.hooks.layer_names(model) lists them)")
        captured.leaf = tensor.detach().requires_grad_(True)
        return captured.leaf.clone()          # later in-place operations may change the copy, not the leaf

    def before(module, args):
        return (leaf(args[0]), *args[1:])

    def after(module, args, output):
        return leaf(output)

    with _hooked(module, before if pre else after, pre=pre):
        yield captured


# --------------------------------------------------------------------------- CAM and Grad-CAM

def class_activation_map(model: nn.Module, x: torch.Tensor, target, *, upsample: bool = True) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016): ``CAM_c(i, j) = sum_k w[c, k] * f_k(i, j)``.

    ``f`` are the last feature maps (N, K, h, w), the input of the global average pool;
    ``w`` the weights of the final linear layer (``fc``), whose bias is left out: the
    spatial mean of the map plus the bias is the class score. ``target``: a class index, or
    one per image. Returns the signed maps (no ReLU, no normalisation) resized bilinearly to
    the image size, (N, H, W); with ``upsample=False`` at the feature maps' size (N, h, w).

    Only for a network that ends in a global average pool and one linear layer (verified
    on the forward pass: the linear layer reads the pooled features and gives the output);
    for any other network a ``ValueError`` says what is needed. One forward pass, no graph.
    """
    xd, target = prepare(model, x, target)
    pool_name = global_pool(model)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if pool_name is None or not linears:
        missing = "no nn.AdaptiveAvgPool2d(1)" if pool_name is None else "no nn.Linear"
        raise ValueError(f"class_activation_map needs {_NEEDS}; {type(model).__name__} has {missing}. "
                         "grad_cam(model, x, target, layer=...) works at any convolutional layer")
    fc_name, fc = linears[-1]
    seen: dict[str, torch.Tensor] = {}

    def at_pool(module, args):
        seen["features"] = args[0]

    def at_fc(module, args, output):
        seen["pooled"], seen["fc"] = args[0], output

    with evaluating(model), torch.no_grad(), _hooked(get_layer(model, pool_name), at_pool, pre=True), \
            _hooked(fc, at_fc, pre=False):
        scores = model(xd)
    features, pooled = seen.get("features"), seen.get("pooled")
    if features is None or pooled is None or features.dim() != 4:
        raise ValueError(f"class_activation_map needs {_NEEDS}; in {type(model).__name__}'s forward pass "
                         f"{pool_name!r} or {fc_name!r} did not run on (N, C, h, w) feature maps")
    mean = features.mean(dim=(2, 3))
    scale = mean.abs().max().clamp(min=1e-12)
    if pooled.shape != mean.shape or not torch.allclose(pooled, mean, rtol=1e-4, atol=1e-5 * scale.item()):
        raise ValueError(f"class_activation_map needs {_NEEDS}; in {type(model).__name__} the last linear "
                         f"layer {fc_name!r} does not read the pooled features of {pool_name!r}")
    if not (scores is seen["fc"] or (scores.shape == seen["fc"].shape and torch.equal(scores, seen["fc"]))):
        raise ValueError(f"class_activation_map needs {_NEEDS}; in {type(model).__name__} the output is "
                         f"not the output of the last linear layer {fc_name!r}")
    weights = fc.weight.detach()[target].to(features.dtype)          # (N, K)
    cam = torch.einsum("nkhw,nk->nhw", features, weights)
    if upsample:
        cam = _upsample(cam, xd.shape[2:])
    return cam.detach().to(x.device, x.dtype)


def grad_cam(model: nn.Module, x: torch.Tensor, target, *, layer: str | None = None,
             upsample: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of a class score at a convolutional layer.

    With ``A`` the layer's output (N, K, h, w) and ``S`` the unnormalised score of the
    target class (a class index, or one per image)::

        alpha_k = mean over positions (i, j) of dS / dA_k(i, j)          # (N, K)
        cam     = ReLU(sum_k alpha_k * A_k)                              # (N, h, w)

    then resized to the image size with ``F.interpolate(cam[:, None], size=(H, W),
    mode="bilinear", align_corners=False)``: (N, H, W); ``upsample=False`` keeps (N, h, w).
    ``layer`` is a name from :func:`cs_utils.hooks.layer_names`; the default ``None`` is the input
    of the global average pool (:func:`global_pool`), the last convolutional block: ``head``
    in EfficientNet-Lite. One forward pass, and a backward pass that stops at the layer.
    """
    xd, target = prepare(model, x, target)
    # In this block, model(xd) stores the layer's output A in captured.features: (N, K, h, w), a leaf
    # tensor that requires grad, so torch.autograd.grad(..., [captured.features]) stops at the layer.
    with evaluating(model), torch.enable_grad(), _feature_leaf(model, layer) as captured:
        ### BEGIN SOLUTION
        scores = target_scores(model(xd), target)
        feats = captured.features
        (grads,) = torch.autograd.grad(scores.sum(), [feats])
        alpha = grads.mean(dim=(2, 3), keepdim=True)           # (N, K, 1, 1)
        cam = (alpha * feats).sum(dim=1).relu()
        if upsample:
            cam = F.interpolate(cam[:, None], size=xd.shape[2:], mode="bilinear", align_corners=False)[:, 0]
        return cam.detach().to(x.device, x.dtype)
        ### END SOLUTION


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, *, layer: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM: :func:`cs_utils.guided_backprop` times the upsampled :func:`grad_cam`.

    Returns the signed (N, 3, H, W) product: fine pixel detail from guided backprop, kept only
    where Grad-CAM finds evidence for the class.
    """
    cam = grad_cam(model, x, target, layer=layer)
    return guided_backprop(model, x, target) * cam[:, None]


# --------------------------------------------------------------------------- integrated gradients

#: ``baseline="blur"``: the Gaussian's standard deviation is this fraction of the image's longer side.
BLUR_FRACTION = 1 / 16


def baseline_image(x: torch.Tensor, baseline=None, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The baseline images (N, 3, H, W) of :func:`integrated_gradients`, in ``x``'s dtype and device.

    ``baseline``: ``None`` or ``"black"`` (zeros); a number in [0, 1] (that grey);
    ``"blur"``: each image blurred by a Gaussian of standard deviation ``max(H, W) / 16``
    pixels (14 px at 224: shapes gone, colours kept; borders mirrored); ``"noise"``: uniform
    noise in [0, 1] from ``generator`` (default: seed 0); or images in [0, 1] of shape
    (N, 3, H, W), (1, 3, H, W) or (3, H, W).
    """
    validate_image(x)
    x = x.detach()
    if baseline is None or (isinstance(baseline, str) and baseline == "black"):
        return torch.zeros_like(x)
    if isinstance(baseline, str):
        if baseline == "blur":
            return gaussian_blur(x, max(x.shape[2:]) * BLUR_FRACTION).clamp(0, 1)
        if baseline == "noise":
            generator = generator if generator is not None else torch.Generator().manual_seed(0)
            return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        raise ValueError(f"baseline must be None/'black', 'blur', 'noise', a grey value in [0, 1] or images; "
                         f"got {baseline!r}")
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not 0 <= baseline <= 1:
            raise ValueError(f"a grey baseline must be in [0, 1], got {baseline!r}")
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be None/'black', 'blur', 'noise', a grey value in [0, 1] or a tensor "
                        f"of images, got {type(baseline).__name__}")
    b = baseline.detach()
    b = b[None] if b.dim() == 3 else b
    validate_image(b, "baseline")
    if b.shape[0] not in (1, x.shape[0]) or b.shape[1:] != x.shape[1:]:
        raise ValueError(f"baseline images must have shape (N, 3, H, W) or (1, 3, H, W) with "
                         f"(N, H, W) = {(x.shape[0], *x.shape[2:])}, got {tuple(baseline.shape)}")
    return b.to(x.device, x.dtype).expand_as(x).clone()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target, *, baseline=None, steps: int = 32,
                         batch_size: int | None = None,
                         generator: torch.Generator | None = None) -> Attribution:
    """Integrated gradients (Sundararajan et al. 2017) of a class score, with the completeness error.

    Along the straight path ``x(a) = b + a * (x - b)`` from the baseline ``b`` (see
    :func:`baseline_image`: None = black, ``"blur"``, ``"noise"`` from ``generator``, a grey
    value, or images) to the image ``x``, the gradient of the unnormalised target score ``S``
    is averaged with the **midpoint rule** at ``a_k = (k + 0.5) / steps``, k = 0 .. steps - 1::

        maps = (x - b) * (1 / steps) * sum_k dS/dx (x(a_k))                     # (N, 3, H, W)

    Completeness: the maps of each image add up to ``S(x) - S(b)`` when the sum is exact;
    ``completeness_error = |maps.sum() - (S(x) - S(b))| / |S(x) - S(b)|`` per image says how far
    the Riemann sum is (inf or nan if ``S(x) = S(b)``). More steps make it smaller.

    The ``N * steps`` path points run through the model ``batch_size`` at a time (one forward and
    one backward pass per batch; default: the fastest of
    :data:`~cs_utils.explainers.GRADIENT_BATCH_SIZES`, measured once), image by image, plus one
    forward pass without a graph over the N images and their baselines. Returns
    ``Attribution(maps, completeness_error)``, detached, on ``x``'s device and dtype.
    """
    xd, target = prepare(model, x, target)
    base = baseline_image(xd, baseline, generator=generator)
    steps = positive_int(steps, "steps")
    n = xd.shape[0]
    model = gradient_network(model)   # the same function with batch norm folded in (cs_utils.engine.folding)
    batch_size = gradient_batch_size(batch_size, model, xd, n * steps)
    with evaluating(model), torch.enable_grad():
        ### BEGIN SOLUTION
        alphas = (torch.arange(steps, dtype=xd.dtype, device=xd.device) + 0.5) / steps   # midpoints
        delta = xd - base
        total = torch.zeros_like(xd)                      # sum of the gradients along each path
        jobs = torch.arange(n * steps, device=xd.device)  # job j: image j // steps, point j % steps
        for chunk in jobs.split(batch_size):
            images, points = chunk // steps, chunk % steps
            path = base[images] + alphas[points].view(-1, 1, 1, 1) * delta[images]
            path.requires_grad_(True)
            scores = target_scores(model(path), target[images])
            (grad,) = torch.autograd.grad(scores.sum(), [path])
            total.index_add_(0, images, grad)
        maps = delta * total / steps
        with torch.no_grad():
            ends = target_scores(model(torch.cat([xd, base])), target.repeat(2))
        gap = ends[:n] - ends[n:]                         # S(x) - S(baseline)
        error = (maps.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()
    return Attribution(maps.detach().to(x.device, x.dtype), error.detach().to(x.device, x.dtype))
    ### END SOLUTION


# --------------------------------------------------------------------------- SmoothGrad

def _class_or_layer_target(model: nn.Module, target, n: int):
    """Class indices (N,), or a ``(layer_name, channel)`` pair passed on unchanged."""
    if isinstance(target, tuple) and target and isinstance(target[0], str):
        return target
    return class_indices(target, n, classes=num_classes(model))


def smooth_grad(model: nn.Module, x: torch.Tensor, target, *, samples: int = 25, noise: float = 0.15,
                explain: Callable = saliency_map, squared: bool = False, batch_size: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``explain``'s maps over noisy copies of each image.

    Each of the ``samples`` copies of an image adds Gaussian noise of standard deviation
    ``noise * (x.max() - x.min())`` (that image's range, as in the paper: 0.15 = 15 %), drawn
    from ``generator`` (default: seed 0), and is **clamped to [0, 1]**: every explainer and the
    model take images in [0, 1] (near black and white the noise is therefore not symmetric).
    ``explain(model, images, targets)`` is any explainer: :func:`cs_utils.saliency_map`
    (default), :func:`cs_utils.guided_backprop`, :func:`grad_cam`, :func:`integrated_gradients`
    (its ``maps``: an explainer returning a tuple contributes its first item) or a
    ``functools.partial`` of one. ``target``: a class index, one per image, or a
    ``(layer_name, channel)`` pair for explainers that take one. ``squared=True`` averages the
    squared maps (SmoothGrad-Squared).

    All ``N * samples`` noisy copies go through ``explain`` ``batch_size`` at a time (default: the
    fastest of :data:`~cs_utils.explainers.GRADIENT_BATCH_SIZES` for a forward+backward, measured
    once), image by image; the noise is drawn copy by copy in that order, so the result does not depend on
    ``batch_size``. Returns maps of the explainer's shape per image, detached, on ``x``'s device
    and dtype.
    """
    xd = model_input(model, x)
    n = xd.shape[0]
    target = _class_or_layer_target(model, target, n)
    samples = positive_int(samples, "samples")
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not 0 <= noise < math.inf:
        raise ValueError(f"noise (the noise's standard deviation as a share of each image's value range) "
                         f"must be a number >= 0, e.g. 0.15; got {noise!r}")
    if not callable(explain):
        raise TypeError(f"explain must be an explainer such as cs_utils.saliency_map, got {explain!r}")
    batch_size = gradient_batch_size(batch_size, gradient_network(model), xd, n * samples)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    sigma = noise * (xd.amax(dim=(1, 2, 3)) - xd.amin(dim=(1, 2, 3)))          # (N,)
    total = None
    for chunk in torch.arange(n * samples).split(batch_size):
        images = chunk // samples
        eps = torch.stack([torch.randn(xd.shape[1:], generator=generator, dtype=xd.dtype) for _ in chunk])
        images = images.to(xd.device)
        noisy = (xd[images] + sigma[images].view(-1, 1, 1, 1) * eps.to(xd.device)).clamp_(0, 1)
        maps = explain(model, noisy, target if isinstance(target, tuple) else target[images])
        maps = (maps[0] if isinstance(maps, tuple) else maps).detach()
        if squared:
            maps = maps * maps
        if total is None:
            total = torch.zeros((n, *maps.shape[1:]), dtype=maps.dtype, device=maps.device)
        total.index_add_(0, images.to(maps.device), maps)
    return (total / samples).to(x.device, x.dtype)
