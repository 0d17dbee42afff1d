"""The attribution exercises: grad_cam and integrated_gradients (attribution.py).

Real photos through EfficientNet-Lite0 in float64. Importing this module registers them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .exercise_registry import Exercise, Mistake, _images, _input_grad, _photos, _rng, register

__all__: list[str] = []   # importing the module registers its exercises

GRAD_CAM_LAYER = "blocks.10"   # 3 x 3 feature maps at 48 px, 112 channels: maps with negative parts


def _targets(target, n):
    return torch.as_tensor(target).reshape(-1).expand(n)


# --------------------------------------------------------------------------- grad_cam

def _grad_cam_inputs():
    return {"images": _photos("coffee", "imagenet_00"), "target": np.array([967, 243])}


def _grad_cam_run(fn, t, ctx):
    model, x = ctx.model(), _images(t["images"])
    return {"last": fn(model, x, t["target"]), "blocks_10": fn(model, x, t["target"], layer=GRAD_CAM_LAYER)}


def _grad_cam_variant(kind):
    def wrong(model, x, target, *, layer=None, upsample=True):
        ### BEGIN SOLUTION
        from ..hooks import capture_activations

        layer = "head" if layer is None else layer    # the input of Lite0's global pool
        xg = x.detach().clone().requires_grad_(True)
        with capture_activations(model, [layer]) as acts:
            scores = model(xg)
        if kind == "probability":
            scores = scores.softmax(dim=1)
        score = scores.gather(1, _targets(target, x.shape[0])[:, None]).sum()
        feats = acts[layer]
        (grads,) = torch.autograd.grad(score, [feats])
        if kind == "channels":
            alpha = grads.mean(dim=1, keepdim=True)          # (N, 1, h, w): one weight per position
        elif kind == "sum":
            alpha = grads.sum(dim=(2, 3), keepdim=True)
        else:
            alpha = grads.mean(dim=(2, 3), keepdim=True)
        cam = (alpha * feats).sum(dim=1)
        if kind != "no_relu":
            cam = cam.relu()
        cam = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear",
                            align_corners=kind == "align_corners")[:, 0]
        return cam.detach()
        ### END SOLUTION
    return wrong


register(Exercise(
    name="grad_cam", module="attribution", function="grad_cam",
    make_inputs=_grad_cam_inputs, run=_grad_cam_run, tolerance=1e-6, uses_model=True,
    hint="alpha_k = mean over the positions (i, j) of d score_target / d A_k(i, j) (unnormalised score), "
         "cam = ReLU(sum_k alpha_k A_k), resized to the image with F.interpolate(..., mode='bilinear', "
         "align_corners=False): result (N, H, W)",
    mistakes=(
        Mistake("no_relu", "forgot the ReLU: Grad-CAM keeps only the positive evidence, "
                "ReLU(sum_k alpha_k A_k)", _grad_cam_variant("no_relu")),
        Mistake("channels", "the gradient is averaged over the channels; alpha_k is the mean over the "
                "positions (i, j) of channel k's gradient: grads.mean(dim=(2, 3))",
                _grad_cam_variant("channels")),
        Mistake("sum", "the gradient is summed over the positions; alpha_k is its mean over the positions "
                "(h * w times smaller)", _grad_cam_variant("sum")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _grad_cam_variant("probability")),
        Mistake("align_corners", "upsample with F.interpolate(..., mode='bilinear', align_corners=False)",
                _grad_cam_variant("align_corners")),
    ),
))


# --------------------------------------------------------------------------- integrated_gradients

IG_STEPS, IG_BATCH = 8, 4


def _ig_inputs():
    noise = _rng(11).integers(0, 256, size=(2, 3, 48, 48), dtype=np.uint8)
    # the top classes at 48 px (marimba p = 0.98, pineapple p = 0.92): completeness errors of 4 and 9 %
    return {"images": _photos("imagenet_02", "imagenet_03"), "target": np.array([642, 953]),
            "noise": noise, "steps": np.array(IG_STEPS), "batch_size": np.array(IG_BATCH)}


def _ig_run(fn, t, ctx):
    model, x = ctx.model(), _images(t["images"])
    kwargs = dict(steps=int(t["steps"]), batch_size=int(t["batch_size"]))
    black_maps, black_error = fn(model, x, t["target"], **kwargs)
    noise_maps, noise_error = fn(model, x, t["target"], baseline=_images(t["noise"]), **kwargs)
    return {"maps_black": black_maps, "completeness_black": black_error,
            "maps_noise": noise_maps, "completeness_noise": noise_error}


def _ig_variant(kind):
    def wrong(model, x, target, *, baseline=None, steps=32, batch_size=None, generator=None):
        ### BEGIN SOLUTION
        from ..attribution import baseline_image

        base = baseline_image(x, None if kind == "from_black" else baseline, generator=generator)
        target = _targets(target, x.shape[0])
        objective = "probability" if kind == "probability" else "score"
        k = torch.arange(steps, dtype=x.dtype)
        alphas = k / steps if kind == "left" else (k + 0.5) / steps
        points = torch.cat([base + a * (x - base) for a in alphas])     # every point in one batch
        grads = _input_grad(model, points, target.repeat(steps), objective).unflatten(0, (steps, -1))
        mean = grads.sum(dim=0) if kind == "no_mean" else grads.mean(dim=0)
        maps = mean if kind == "no_delta" else (x - base) * mean
        with torch.no_grad():
            scores = model(torch.cat([x, base]))
            if kind == "probability":
                scores = scores.softmax(dim=1)
            ends = scores.gather(1, target.repeat(2)[:, None])[:, 0]
        gap = ends[:x.shape[0]] - ends[x.shape[0]:]
        return maps.detach(), ((maps.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()).detach()
        ### END SOLUTION
    return wrong


register(Exercise(
    name="integrated_gradients", module="attribution", function="integrated_gradients",
    make_inputs=_ig_inputs, run=_ig_run, tolerance=1e-6, uses_model=True,
    hint="maps = (x - b) * mean over k of d score_target / dx at b + a_k (x - b), a_k = (k + 0.5) / steps "
         "(midpoint rule, unnormalised score); completeness_error = |maps.sum() - (S(x) - S(b))| / "
         "|S(x) - S(b)| per image; return Attribution(maps, completeness_error)",
    mistakes=(
        Mistake("no_delta", "left out the (x - baseline) factor: the maps are (x - b) times the mean "
                "gradient along the path", _ig_variant("no_delta")),
        Mistake("probability", "the gradient of the softmax probability; use the unnormalised class score",
                _ig_variant("probability")),
        Mistake("left", "the points a_k = k / steps (left Riemann sum); use the midpoints "
                "a_k = (k + 0.5) / steps", _ig_variant("left")),
        Mistake("no_mean", "the gradients are summed over the steps; average them (divide by steps)",
                _ig_variant("no_mean")),
        Mistake("from_black", "the baseline is ignored: the path runs from the baseline b to x, "
                "b + a (x - b), and the maps are (x - b) times the mean gradient", _ig_variant("from_black")),
    ),
))
