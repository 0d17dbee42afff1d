"""Which pixels matter? Gradient saliency, occlusion and guided backprop.

* :func:`saliency_map`: |d score_c / d x|, max over RGB (Simonyan et al. 2014).
* :func:`occlusion_map`: the drop of the class probability when a patch is hidden
  (Zeiler & Fergus 2014).
* :func:`guided_backprop`: backprop that lets only positive gradients through each
  ReLU/ReLU6, and only where the unit was active (Springenberg et al. 2015);
  :func:`guided_relu_grad` is the rule at one activation.

Are the maps telling the truth? The sanity and faithfulness measures (model
randomisation, deletion and insertion curves) are in :mod:`cs_utils.evaluation`.

Every function leaves the caller's model and tensors as it found them: the
image gradient comes from ``torch.autograd.grad`` (nothing is written into
``.grad``), modes are restored by :func:`cs_utils.hooks.evaluating`, and the guided
activations live only inside a ``with`` block.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .engine.folding import gradient_network
from .engine.incremental_occlusion import INCREMENTAL_BATCH_SIZE, IncrementalNetwork, why_not_incremental
from .explainers import fill_colors, forward_batch_size, prepare, target_scores
from .hooks import evaluating, extract_features
from .validation import int_pair, positive_int, validate_layer

__all__ = [
    "gradient_image",
    "guided_backprop",
    "guided_relu_grad",
    "occlusion_map",
    "occlusion_windows",
    "saliency_map",
]


# --------------------------------------------------------------------------- saliency

def saliency_map(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Gradient saliency (Simonyan et al. 2014): ``max_c |d S_target / d x_c|`` for each pixel.

    ``x``: images (N, 3, H, W) in [0, 1]. ``target``: a class index, or one per
    image. ``S_target`` is the unnormalised class score (before the softmax), so
    the map does not depend on how confident the model is about the other
    classes. Returns a detached (N, H, W) tensor on ``x``'s device. One forward
    and one backward pass for the whole batch; the model runs in eval mode, as a copy
    with its batch norm folded into the convolutions (:func:`cs_utils.engine.folding.gradient_network`:
    the same function, made once per model; the model itself when it has hooks).
    """
    xd, target = prepare(model, x, target)
    model = gradient_network(model)   # the same function with batch norm folded in (cs_utils.engine.folding)
    with evaluating(model), torch.enable_grad():
        ### BEGIN SOLUTION
        xd = xd.requires_grad_(True)
        scores = target_scores(model(xd), target)
        (grad,) = torch.autograd.grad(scores.sum(), [xd])
        saliency = grad.abs().amax(dim=1)
        return saliency.detach().to(x.device, x.dtype)
        ### END SOLUTION


# --------------------------------------------------------------------------- occlusion

def _starts(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:  # one more window flush with the edge: every pixel is covered
        starts.append(size - window)
    return starts


def occlusion_windows(height: int, width: int, window, stride) -> list[tuple[int, int]]:
    """The (top, left) corners of the occluding patches for an image of ``height`` x ``width``.

    Patches of ``window`` pixels (int or (h, w)) step by ``stride``; a last row
    and column of patches flush with the bottom and right edges is added when the
    stride does not land there, so every pixel is hidden at least once.
    ``len(occlusion_windows(...))`` forward passes are needed per image.
    """
    wh, ww = int_pair(window, "window")
    sh, sw = int_pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"window {wh}x{ww} is larger than the {height}x{width} image; use a smaller window")
    return [(t, left) for t in _starts(height, wh, sh) for left in _starts(width, ww, sw)]


def _plain_reason(model: nn.Module, incremental: bool | None) -> str | None:
    """Why occlusion takes the plain path for ``model`` (None: the incremental one)."""
    if incremental is not None and not isinstance(incremental, bool):
        raise TypeError(f"incremental must be None (where the model allows), True or False, "
                        f"got {incremental!r}")
    if incremental is False:
        return "incremental=False"
    reason = why_not_incremental(model)
    if reason is not None and incremental:
        raise ValueError(f"incremental=True, but incremental occlusion cannot run this model: {reason}. "
                         "Pass incremental=None to fall back to the plain path.")
    return reason


def occlusion_map(model: nn.Module, x: torch.Tensor, target, *, window=32, stride=8, fill=None,
                  batch_size: int | None = None, incremental: bool | None = None,
                  progress: bool = True) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): how much hiding each region lowers p(target).

    A ``window`` x ``window`` patch (int or (h, w)) filled with the image's mean
    colour (or ``fill``: one grey value or 3 RGB values in [0, 1]) slides over
    each image in steps of ``stride`` (see :func:`occlusion_windows`). For every
    position the drop ``p(target | x) - p(target | occluded x)`` of the softmax
    probability is recorded; each pixel gets the mean drop over the patches that
    covered it. Positive values: hiding the region hurts the prediction.

    The ``N * len(occlusion_windows(H, W, window, stride))`` occluded copies run
    through the model ``batch_size`` at a time (plus one pass over the N
    originals), without building a graph; the progress bar shows the total
    before the first batch. ``batch_size=None`` picks the size with the least time
    per image from a short measurement of plain forward passes at batch sizes 1,
    2, 4, ... 32 (once per model, device, dtype, image shape and thread count in
    the process; on a CPU small batches are often the fastest). Returns a detached
    (N, H, W) tensor on ``x``'s device.

    ``incremental``: an occluded copy differs from the image only inside the patch. By default
    (``None``) the loop therefore runs, in place of ``model``, an
    :class:`cs_utils.engine.incremental_occlusion.IncrementalNetwork` of it: the same network (the
    same scores up to float rounding), which computes at each layer only the region where a copy
    differs from its image and takes the rest from one pass of the image, several times faster.
    The loop does not change: it builds the copies and asks the network for their scores. Models
    the engine does not know (:func:`cs_utils.engine.incremental_occlusion.why_not_incremental`
    says why) run as they are; ``False`` always runs the model as it is, ``True`` raises a
    ``ValueError`` instead. With the engine, ``batch_size`` defaults to
    :data:`cs_utils.engine.incremental_occlusion.INCREMENTAL_BATCH_SIZE` copies.
    """
    xd, target = prepare(model, x, target)
    n, _, height, width = xd.shape
    windows = occlusion_windows(height, width, window, stride)
    wh, ww = int_pair(window, "window")
    colors = fill_colors(xd, fill)
    plain = _plain_reason(model, incremental)      # None: the engine computes the scores
    if plain is None:
        model = IncrementalNetwork(model, xd)       # the same scores, computed where each copy changed
        batch_size = INCREMENTAL_BATCH_SIZE if batch_size is None else batch_size
    elif batch_size is None:
        batch_size = forward_batch_size(model, xd, n * len(windows))
    batch_size = positive_int(batch_size, "batch_size")
    label = "occlusion" if plain else "occlusion (incremental)"
    ### BEGIN SOLUTION
    from tqdm.auto import tqdm

    total = n * len(windows)
    desc = f"{label}: {total} copies in {math.ceil(total / batch_size)} batches"
    with evaluating(model), torch.inference_mode(), \
            tqdm(total=total, disable=not progress, unit="img", leave=False, desc=desc) as bar:
        base = target_scores(model(xd).softmax(dim=1), target)            # (N,)
        jobs = [(i, j) for i in range(n) for j in range(len(windows))]   # (image, window) per copy
        drops = torch.empty(n, len(windows), device=xd.device, dtype=xd.dtype)
        for start in range(0, total, batch_size):
            chunk = jobs[start:start + batch_size]
            images = torch.tensor([i for i, _ in chunk], device=xd.device)
            batch = xd.index_select(0, images)                       # a new tensor: x is untouched
            for row, (i, j) in enumerate(chunk):
                top, left = windows[j]
                batch[row, :, top:top + wh, left:left + ww] = colors[i, :, None, None]
            probs = target_scores(model(batch).softmax(dim=1), target[images])
            drops[images, [j for _, j in chunk]] = base[images] - probs
            bar.update(len(chunk))
        heat = torch.zeros(n, height, width, device=xd.device, dtype=xd.dtype)
        covered = torch.zeros(height, width, device=xd.device, dtype=xd.dtype)
        for j, (top, left) in enumerate(windows):
            heat[:, top:top + wh, left:left + ww] += drops[:, j, None, None]
            covered[top:top + wh, left:left + ww] += 1
        heat /= covered
    return heat.clone().to(x.device, x.dtype)   # a normal tensor again (not an inference tensor)
    ### END SOLUTION


# --------------------------------------------------------------------------- guided backprop

def guided_relu_grad(grad_output: torch.Tensor, activation: torch.Tensor,
                     upper: float | None = None) -> torch.Tensor:
    """The guided-backprop rule at one ReLU: the gradient passed on to the ReLU's input.

    ``grad_output``: the gradient arriving at the ReLU's output; ``activation``:
    the ReLU's forward output (same shape). A unit passes its gradient only where
    the gradient is positive *and* the unit was active, ``0 < activation``
    (Springenberg et al. 2015: backprop's mask combined with the deconvnet's)::

        grad_input = grad_output * (grad_output > 0) * (activation > 0)

    For a ReLU6 (``upper=6``) the unit is also silent where it saturated,
    ``activation == upper``: there the true local derivative of ``min(max(x, 0), 6)``
    is 0, just as below 0, so the backprop half of the rule zeros it too.
    """
    ### BEGIN SOLUTION
    # Readable form: torch.where((activation > 0) & (activation < upper), grad_output.clamp(min=0), 0).
    # The fused backward kernels of ReLU and hardtanh apply the activation mask in one pass (they take
    # the output in place of the input: same mask), then the new tensor is clamped in place.
    if upper is None:
        grad = torch.ops.aten.threshold_backward(grad_output, activation, 0)
    else:
        grad = torch.ops.aten.hardtanh_backward(grad_output, activation, 0, upper)
    return grad.clamp_(min=0)
    ### END SOLUTION


class _GuidedReLU(torch.autograd.Function):
    """``min(max(x, 0), upper)`` forward (in place if asked); :func:`guided_relu_grad` backward."""

    @staticmethod
    def forward(ctx, x, upper, inplace):
        if inplace:
            out = x.clamp_(min=0, max=upper)
            ctx.mark_dirty(x)
        else:
            out = x.clamp(min=0, max=upper)
        ctx.upper = upper
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (activation,) = ctx.saved_tensors
        return guided_relu_grad(grad_output, activation, ctx.upper), None, None


_RELU = (F.relu, torch.relu, torch.Tensor.relu)
_RELU_INPLACE = (torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", torch.relu_))


def _relu_call(func, args, kwargs):
    """``(input, upper, inplace)`` when ``func(*args, **kwargs)`` is a ReLU or a ReLU6, else None."""
    def arg(i, name, default):
        return args[i] if len(args) > i else kwargs.get(name, default)

    if func in _RELU:
        return arg(0, "input", None), None, func is F.relu and bool(arg(1, "inplace", False))
    if func in _RELU_INPLACE:
        return arg(0, "input", None), None, True
    if func is F.relu6:
        return arg(0, "input", None), 6.0, bool(arg(1, "inplace", False))
    if func in (F.hardtanh, F.hardtanh_):  # nn.ReLU6 is a Hardtanh(0, 6)
        low, high = arg(1, "min_val", -1.0), arg(2, "max_val", 1.0)
        if low == 0 and high > 0:
            return arg(0, "input", None), float(high), func is F.hardtanh_ or bool(arg(3, "inplace", False))
    return None


class _GuidedActivations(TorchFunctionMode):
    """Inside ``with``: every ReLU/ReLU6 (module, functional or tensor method, in place or not)
    runs as :class:`_GuidedReLU`; ``count`` says how many ran. Nothing of the model is touched."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        spec = _relu_call(func, args, kwargs)
        if spec is None or not isinstance(spec[0], torch.Tensor) or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        x, upper, inplace = spec
        self.count += 1
        return _GuidedReLU.apply(x, upper, bool(inplace))


def _layer_target(model: nn.Module, target):
    """``(layer_name, channel)`` validated, or None when ``target`` is a class index."""
    if not isinstance(target, tuple):
        return None
    if len(target) != 2 or not isinstance(target[0], str) or isinstance(target[1], bool) or \
            not isinstance(target[1], (int, np.integer)):
        raise TypeError(f"an intermediate target is a pair (layer_name, channel) such as ('blocks.10', 5), "
                        f"got {target!r}")
    validate_layer(model, target[0])  # unknown names raise a KeyError listing close ones
    if target[1] < 0:
        raise IndexError(f"channel {target[1]} is negative; channels start at 0")
    return target[0], int(target[1])


def guided_backprop(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015) of a class score or a neuron to the pixels.

    ``target``: a class index (or one per image), whose unnormalised score is
    differentiated; or ``(layer_name, channel)``: that channel's strongest
    activation (its maximum over positions, one neuron, as Zeiler & Fergus and
    Springenberg et al. show them; the forward pass stops after the layer). At
    every ReLU and ReLU6 the backward pass applies :func:`guided_relu_grad`.
    Returns the signed (N, 3, H, W) gradient, detached, on ``x``'s device.

    The activations are found wherever they run: ``nn.ReLU``/``nn.ReLU6``
    modules, ``F.relu``/``F.relu6``/``F.hardtanh(x, 0, t)``/``torch.relu``/
    ``x.relu()`` calls, in place or not (in-place ones still modify their input,
    as the model expects). They are swapped for the guided rule only inside this
    call, by a torch-function mode that is always exited (also on an exception);
    no hook stays on the model. If no ReLU ran (e.g. activations written as
    ``x.clamp(min=0)`` or ``torch.maximum``), a ``RuntimeError`` says so instead
    of returning a plain gradient.
    """
    layer = _layer_target(model, target)
    xd, classes = prepare(model, x, 0 if layer is not None else target)
    model = gradient_network(model, keep=() if layer is None else (layer[0],))   # batch norm folded in
    guided = _GuidedActivations()
    with evaluating(model), torch.enable_grad():
        xd = xd.requires_grad_(True)
        with guided:
            if layer is None:
                objective = target_scores(model(xd), classes)
            else:
                name, channel = layer
                act = extract_features(model, xd, [name])[name]
                if act.dim() < 2 or channel >= act.shape[1]:
                    raise IndexError(f"channel {channel} is out of range: layer {name!r} has "
                                     f"{act.shape[1] if act.dim() >= 2 else 0} channels (shape "
                                     f"{tuple(act.shape)})")
                objective = act[:, channel].reshape(act.shape[0], -1).amax(dim=1)
        if guided.count == 0:
            raise RuntimeError(
                "guided backprop found no ReLU/ReLU6 in the forward pass, so it would return the plain "
                "gradient. It recognises nn.ReLU/nn.ReLU6 modules and F.relu, F.relu6, torch.relu, "
                "x.relu() calls; rewrite activations such as x.clamp(min=0) or torch.maximum(x, 0) with "
                "one of those. If the target layer comes before the first activation, guided backprop "
                "equals the gradient: use saliency_map or a deeper layer.")
        (grad,) = torch.autograd.grad(objective.sum(), [xd])
    return grad.detach().to(x.device, x.dtype)


def gradient_image(grad: torch.Tensor, *, percentile: float = 99.0) -> torch.Tensor:
    """Signed image gradients (N, 3, H, W) as images in [0, 1] for display: grey is 0.

    Each image is divided by its own ``percentile`` of absolute values (so a few
    extreme pixels do not make the rest invisible), then mapped to
    ``0.5 + 0.5 * value`` and clipped: positive gradients brighter, negative darker.
    """
    if not isinstance(grad, torch.Tensor) or grad.dim() != 4 or grad.shape[1] != 3:
        raise ValueError(f"expected gradients of shape (N, 3, H, W), got {getattr(grad, 'shape', grad)}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    g = grad.detach().float()
    scale = g.abs().flatten(1).quantile(percentile / 100, dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * g / scale).clamp(0, 1)
