"""The exercises that differentiate the pretrained network with respect to the pixels.

saliency_map, occlusion_map and guided_relu_grad (saliency.py), fooling_step (adversarial.py),
class_visualization_step (class_viz.py) and deepdream_step (dream.py), on real photos through
EfficientNet-Lite0 in float64. Importing this module registers them.
"""

from __future__ import annotations

import numpy as np
import torch

from .exercise_registry import (
    PHOTO_SIZE,
    Exercise,
    Mistake,
    _accepted,
    _generator,
    _images,
    _input_grad,
    _photos,
    _rng,
    register,
)

__all__: list[str] = []   # importing the module registers its exercises


def _saliency_inputs():
    return {"images": _photos("coffee", "imagenet_00"), "target": np.array([967, 243])}


def _saliency_run(fn, t, ctx):
    return {"saliency": fn(ctx.model(), _images(t["images"]), t["target"])}


def _saliency_variant(kind):
    def wrong(model, x, target):
        ### BEGIN SOLUTION
        grad = _input_grad(model, x, target, "score" if kind in ("no_abs", "sum") else kind)
        if kind == "no_abs":
            return grad.amax(dim=1)
        if kind == "sum":
            return grad.abs().sum(dim=1)
        return grad.abs().amax(dim=1)
        ### END SOLUTION
    return wrong


register(Exercise(
    name="saliency_map", module="saliency", function="saliency_map",
    make_inputs=_saliency_inputs, run=_saliency_run, tolerance=1e-6, uses_model=True,
    hint="saliency = max over the 3 colour channels of |d score_target / d x|, with the unnormalised "
         "score (before the softmax), one gradient for the whole batch: result (N, H, W)",
    mistakes=(
        Mistake("no_abs", "forgot abs: take the absolute value of the gradient before the max over channels",
                _saliency_variant("no_abs")),
        Mistake("sum", "sum over the channels instead of the max over channels", _saliency_variant("sum")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _saliency_variant("probability")),
        Mistake("loss", "the gradient of the cross-entropy loss; use the unnormalised class score",
                _saliency_variant("loss")),
    ),
))


def _occlusion_inputs():
    # The model's top class for this photo at 48 px (p = 0.76): large drops, a well-conditioned map.
    return {"image": _photos("imagenet_05"), "target": np.array(488), "window": np.array(16),
            "stride": np.array(8), "batch_size": np.array(8), "grey": np.array(0.5)}


class _ForwardCounter:
    """Counts the forward passes of a model (a forward pre-hook, removed on exit)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(self._count)
        return self

    def _count(self, module, args):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


def _occlusion_run(fn, t, ctx):
    # float32: the reference keeps its drops in float32 buffers, so float64 inputs gain nothing
    model = ctx.model(torch.float32)
    x, target = _images(t["image"], torch.float32), int(t["target"])
    kwargs = dict(window=int(t["window"]), stride=int(t["stride"]), batch_size=int(t["batch_size"]))
    with _ForwardCounter(model) as counter:
        mean_fill = fn(model, x, target, **_accepted(fn, **kwargs, progress=False))
    grey = fn(model, x, target, **_accepted(fn, **kwargs, fill=float(t["grey"]), progress=False))
    return {"mean_fill": mean_fill, "grey_fill": grey, "calls_forward": counter.calls}


def _occlusion_variant(kind, batched=True):
    def wrong(model, x, target, *, window=32, stride=8, fill=None, batch_size=32, progress=True):
        ### BEGIN SOLUTION
        from ..saliency import occlusion_windows

        n, _, height, width = x.shape
        colour = x.mean(dim=(2, 3)) if fill is None else torch.full((n, 3), float(fill), dtype=x.dtype)
        window = window if isinstance(window, int) else window[0]
        if kind == "black":
            colour = torch.zeros_like(colour)
        with torch.no_grad():
            def score(images):
                out = model(images)
                return (out if kind == "score" else out.softmax(dim=1))[:, target]
            base = score(x)
            heat = torch.zeros(n, height, width, dtype=x.dtype)
            covered = torch.zeros(height, width, dtype=x.dtype)
            windows = occlusion_windows(height, width, window, stride)
            copies = x.repeat_interleave(len(windows), dim=0).reshape(n, len(windows), *x.shape[1:])
            for j, (top, left) in enumerate(windows):
                copies[:, j, :, top:top + window, left:left + window] = colour[:, :, None, None]
            if batched:
                scores = score(copies.flatten(0, 1)).reshape(n, len(windows))
            else:
                scores = torch.stack([score(copies[:, j]) for j in range(len(windows))], dim=1)
            for j, (top, left) in enumerate(windows):
                drop = scores[:, j] - base if kind == "sign" else base - scores[:, j]
                heat[:, top:top + window, left:left + window] += drop[:, None, None]
                covered[top:top + window, left:left + window] += 1
        return heat if kind == "sum" else heat / covered
        ### END SOLUTION
    return wrong


register(Exercise(
    name="occlusion_map", module="saliency", function="occlusion_map",
    make_inputs=_occlusion_inputs, run=_occlusion_run, tolerance=1e-3, uses_model=True,
    vectorize_hint="run the occluded copies through the model batch_size at a time (one batched forward "
                   "pass per batch), not one forward pass per window",
    hint="for every window position: drop = p(target | x) - p(target | x with the patch filled), softmax "
         "probabilities; each pixel gets the mean drop over the windows that cover it (occlusion_windows "
         "gives the positions; fill=None means each image's mean colour)",
    mistakes=(
        Mistake("score", "the drop of the unnormalised score; use the softmax probability",
                _occlusion_variant("score")),
        Mistake("sum", "the drops are summed; each pixel gets the mean over the windows covering it",
                _occlusion_variant("sum")),
        Mistake("sign", "the sign is flipped: drop = p(original) - p(occluded)", _occlusion_variant("sign")),
        Mistake("black", "fill=None means each image's mean colour, not black", _occlusion_variant("black")),
    ),
))


def _guided_inputs():
    rng = _rng(4)
    return {"grad_output": rng.standard_normal((2, 3, 4, 5)),
            "activation": np.clip(rng.standard_normal((2, 3, 4, 5)) * 5, 0, 6)}


def _guided_run(fn, t, ctx):
    return {"relu": fn(t["grad_output"], t["activation"]),
            "relu6": fn(t["grad_output"], t["activation"], upper=6.0)}


def _guided_variant(kind):
    def wrong(grad_output, activation, upper=None):
        ### BEGIN SOLUTION
        if kind == "backprop":
            return grad_output * (activation > 0)
        if kind == "deconvnet":
            return grad_output.clamp(min=0)
        return grad_output.clamp(min=0) * (activation > 0)  # "upper" ignored
        ### END SOLUTION
    return wrong


register(Exercise(
    name="guided_relu_grad", module="saliency", function="guided_relu_grad",
    make_inputs=_guided_inputs, run=_guided_run, tolerance=1e-9,
    hint="guided backprop passes grad_output only where grad_output > 0 AND the unit was active "
         "(0 < activation, and activation < upper for a ReLU6)",
    mistakes=(
        Mistake("backprop", "that is plain backprop (mask by activation only): also zero the negative "
                "gradients", _guided_variant("backprop")),
        Mistake("deconvnet", "that is the deconvnet rule (positive gradients only): also zero where the unit "
                "was inactive (activation <= 0)", _guided_variant("deconvnet")),
        Mistake("upper", "for a ReLU6 (upper=6) a saturated unit (activation == upper) passes no gradient",
                _guided_variant("upper")),
    ),
))


def _fooling_inputs():
    return {"images": _photos("imagenet_01", "imagenet_02"), "target": np.array([6, 130]),
            "step_size": np.array(0.5)}


def _fooling_run(fn, t, ctx):
    x = _images(t["images"])
    out = fn(ctx.model(), x, t["target"].tolist(), step_size=float(t["step_size"]))
    return {"step": out - x}


def _fooling_variant(kind):
    def wrong(model, x, target, *, step_size=0.25):
        ### BEGIN SOLUTION
        grad = _input_grad(model, x, target, "loss" if kind == "loss" else "score")
        if kind == "loss":
            grad = -grad
        if kind == "sign":
            return x + step_size * grad.sign()
        if kind == "batch_norm":
            return x + step_size * grad / grad.norm()
        if kind == "no_norm":
            return x + step_size * grad
        norms = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return x + step_size * grad / norms
        ### END SOLUTION
    return wrong


register(Exercise(
    name="fooling_step", module="adversarial", function="fooling_step",
    make_inputs=_fooling_inputs, run=_fooling_run, tolerance=1e-6, uses_model=True,
    hint="x + step_size * g / ||g||_2 with g = d score_target / d x (unnormalised score), one L2 norm per "
         "image, no clamping",
    mistakes=(
        Mistake("sign", "that is the sign of the gradient (FGSM); divide g by its L2 norm instead",
                _fooling_variant("sign")),
        Mistake("batch_norm", "one norm for the whole batch; normalise each image's gradient by its own "
                "L2 norm (g.flatten(1).norm(dim=1))", _fooling_variant("batch_norm")),
        Mistake("no_norm", "the gradient is not normalised: divide by its L2 norm",
                _fooling_variant("no_norm")),
        Mistake("loss", "descending the cross-entropy is not the same step: ascend the unnormalised score",
                _fooling_variant("loss")),
    ),
))


def _class_viz_inputs():
    rng = _rng(8)
    noise = np.clip(0.5 + 0.1 * rng.standard_normal((2, 3, PHOTO_SIZE, PHOTO_SIZE)), 0, 1)
    return {"image": np.round(noise * 255).astype(np.uint8), "target": np.array([76, 1]),
            "learning_rate": np.array(3.0),
            "l2_reg": np.array(0.05)}


def _class_viz_run(fn, t, ctx):
    x = _images(t["image"])
    out = fn(ctx.model(), x, t["target"].tolist(), learning_rate=float(t["learning_rate"]),
             l2_reg=float(t["l2_reg"]))
    return {"step": out - x}


def _class_viz_variant(kind):
    def wrong(model, img, target, *, learning_rate=3.0, l2_reg=4e-3):
        ### BEGIN SOLUTION
        x = img.detach().clone().requires_grad_(True)
        targets = torch.as_tensor(target).reshape(-1).expand(x.shape[0])
        scores = model(x)
        if kind == "probability":
            scores = scores.softmax(dim=1)
        score = scores.gather(1, targets[:, None]).sum()
        centre = 0.0 if kind == "around_zero" else 0.5
        penalty = 0.0 if kind == "no_l2" else l2_reg * (x - centre).pow(2).sum()
        objective = score + penalty if kind == "sign" else score - penalty
        (grad,) = torch.autograd.grad(objective, [x])
        return (x + learning_rate * grad).detach()
        ### END SOLUTION
    return wrong


register(Exercise(
    name="class_visualization_step", module="class_viz", function="class_visualization_step",
    make_inputs=_class_viz_inputs, run=_class_viz_run, tolerance=1e-6, uses_model=True,
    hint="img + learning_rate * d/d img [score_target(img) - l2_reg * ||img - 0.5||^2] with the "
         "unnormalised score, a plain (not normalised) gradient step, no clamping",
    mistakes=(
        Mistake("no_l2", "the L2 penalty is missing: subtract l2_reg * ||img - 0.5||^2 from the score",
                _class_viz_variant("no_l2")),
        Mistake("around_zero", "the L2 penalty pulls towards 0.5 (mid-grey, the zero of the network's "
                "input), not towards 0: use ||img - 0.5||^2", _class_viz_variant("around_zero")),
        Mistake("sign", "the L2 penalty has the wrong sign: ascend score - l2_reg * ||img - 0.5||^2",
                _class_viz_variant("sign")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _class_viz_variant("probability")),
    ),
))


def _dream_inputs():
    return {"image": _photos("imagenet_05"), "step_size": np.array(0.05), "jitter": np.array(6),
            "seed": np.array(3)}


DREAM_LAYER = "blocks.4"


def _dream_run(fn, t, ctx):
    x = _images(t["image"])
    out = fn(ctx.model(), x, DREAM_LAYER, step_size=float(t["step_size"]), jitter=int(t["jitter"]),
             generator=_generator(t["seed"]))
    return {"step": out - x}


def _dream_variant(kind):
    def wrong(model, x, layer, *, step_size=0.01, jitter=32, generator=None):
        ### BEGIN SOLUTION
        from ..dream import roll_offsets
        from ..hooks import extract_features

        dy, dx = roll_offsets(jitter, generator)
        rolled = torch.roll(x.detach(), shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        activation = extract_features(model, rolled, [layer])[layer]
        objective = activation.mean() if kind == "mean" else 0.5 * activation.pow(2).sum()
        (grad,) = torch.autograd.grad(objective, [rolled])
        if kind == "l2":
            grad = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        else:
            grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        stepped = rolled.detach() + step_size * grad
        if kind == "no_roll_back":
            return stepped.clamp(0, 1)
        stepped = torch.roll(stepped, shifts=(-dy, -dx), dims=(2, 3))
        return stepped if kind == "no_clamp" else stepped.clamp(0, 1)
        ### END SOLUTION
    return wrong


register(Exercise(
    name="deepdream_step", module="dream", function="deepdream_step",
    make_inputs=_dream_inputs, run=_dream_run, tolerance=1e-6, uses_model=True,
    hint="roll x by roll_offsets(jitter, generator), take the gradient of 0.5 * ||activation||^2 at the "
         "layer, divide it by its mean absolute value (per image), step uphill, roll back, clip to [0, 1]",
    mistakes=(
        Mistake("no_roll_back", "the image is not rolled back by (-dy, -dx) after the step",
                _dream_variant("no_roll_back")),
        Mistake("l2", "normalise the gradient by its mean absolute value, not its L2 norm",
                _dream_variant("l2")),
        Mistake("mean", "the objective is 0.5 * ||activation||^2 (its gradient at the layer is the "
                "activation "
                "itself), not the mean activation", _dream_variant("mean")),
        Mistake("no_clamp", "the pixels are not clipped to [0, 1] after the step",
                _dream_variant("no_clamp")),
    ),
))
