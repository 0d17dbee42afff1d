"""The exercises of cs_utils/losses.py: gram_matrix, content_loss, style_loss, tv_loss.

Importing this module registers them in :data:`cs_utils.course.exercise_registry.EXERCISES`.
"""

from __future__ import annotations

import numpy as np

from .exercise_registry import (
    Exercise,
    Mistake,
    _rng,
    register,
)

__all__: list[str] = []   # importing the module registers its exercises


# ---- losses


def _gram_inputs():
    rng = _rng(0)
    return {"features": rng.standard_normal((2, 4, 5, 6))}


def _gram_run(fn, t, ctx):
    return {"normalized": fn(t["features"]), "unnormalized": fn(t["features"], normalize=False)}


def _gram_variant(scale):
    def wrong(features, normalize=True):
        ### BEGIN SOLUTION
        from ..losses import gram_matrix

        n, c, h, w = features.shape
        return gram_matrix(features, normalize=False) / (scale(n, c, h, w) if normalize else 1)
        ### END SOLUTION
    return wrong


register(Exercise(
    name="gram_matrix", module="losses", function="gram_matrix",
    make_inputs=_gram_inputs, run=_gram_run, tolerance=1e-6,
    hint="G[n] = F F^T with F = features[n] reshaped to (C, H*W), one Gram per image, "
         "divided by C*H*W when normalize is true",
    mistakes=(
        Mistake("no_normalization", "the normalised Gram matrix is not divided by C*H*W "
                "(check `if normalize:`)", _gram_variant(lambda n, c, h, w: 1)),
        Mistake("hw_only", "wrong normalisation of the Gram matrix: divide by C*H*W, not by H*W",
                _gram_variant(lambda n, c, h, w: h * w)),
        Mistake("nchw", "wrong normalisation of the Gram matrix: divide by C*H*W, not by N*C*H*W "
                "(each image has its own Gram)", _gram_variant(lambda n, c, h, w: n * c * h * w)),
    ),
))


def _content_inputs():
    rng = _rng(1)
    return {"features": rng.standard_normal((1, 3, 4, 5)), "target": rng.standard_normal((1, 3, 4, 5)),
            "weight": np.array(0.7)}


def _content_run(fn, t, ctx):
    return {"loss": fn(t["features"], t["target"], weight=float(t["weight"]))}


def _content_variant(kind):
    def wrong(features, target, weight=1.0):
        ### BEGIN SOLUTION
        diff = features - target
        if kind == "mean":
            return weight * diff.pow(2).mean()
        if kind == "no_weight":
            return diff.pow(2).sum()
        return weight * diff.pow(2).sum().sqrt()
        ### END SOLUTION
    return wrong


register(Exercise(
    name="content_loss", module="losses", function="content_loss",
    make_inputs=_content_inputs, run=_content_run, tolerance=1e-6,
    hint="content loss = weight * sum((features - target)^2), a scalar tensor",
    mistakes=(
        Mistake("mean", "mean instead of sum over the squared differences", _content_variant("mean")),
        Mistake("no_weight", "the weight is not applied", _content_variant("no_weight")),
        Mistake("norm", "the L2 norm instead of the squared L2 norm (no square root)",
                _content_variant("norm")),
    ),
))


def _style_inputs():
    rng = _rng(2)
    f1, f2 = rng.standard_normal((1, 3, 5, 5)), rng.standard_normal((1, 4, 3, 3))
    return {"features_0": f1, "features_1": f2,
            "target_0": rng.standard_normal((1, 3, 3)) * 0.5,
            "target_1": rng.standard_normal((1, 4, 4)) * 0.5,
            "weights": np.array([0.6, 1.5])}


def _style_run(fn, t, ctx):
    features = [t["features_0"], t["features_1"]]
    targets = [t["target_0"], t["target_1"]]
    weights = [float(w) for w in t["weights"]]
    return {"loss": fn(features, targets, weights=weights),
            "loss_weight_2": fn(features, targets, weights=2.0)}


def _style_variant(kind):
    def wrong(features, target_grams, weights=1.0):
        ### BEGIN SOLUTION
        from ..losses import gram_matrix

        if isinstance(weights, (int, float)):
            weights = [float(weights)] * len(features)
        total = 0.0
        for f, a, w in zip(features, target_grams, weights):
            g = gram_matrix(f, normalize=kind != "unnormalized_gram")
            err = (g - a).pow(2)
            if kind == "sum":
                total = total + w * err.sum()
            else:
                total = total + (err.mean() if kind == "no_weights" else w * err.mean())
        return total
        ### END SOLUTION
    return wrong


register(Exercise(
    name="style_loss", module="losses", function="style_loss",
    make_inputs=_style_inputs, run=_style_run, tolerance=1e-6,
    hint="style loss = sum over layers of w_l * mean((gram_matrix(F_l) - A_l)^2) with the normalised "
         "Gram matrix; make gram_matrix pass first",
    mistakes=(
        Mistake("sum", "each layer's squared Gram error is summed; divide by the size of the Gram (mean)",
                _style_variant("sum")),
        Mistake("no_weights", "the per-layer weights are not applied", _style_variant("no_weights")),
        Mistake("unnormalized_gram", "the Gram matrices must be the normalised ones (gram_matrix(F), "
                "divided by C*H*W)", _style_variant("unnormalized_gram")),
    ),
))


def _tv_inputs():
    rng = _rng(3)
    return {"x": rng.uniform(0, 1, (2, 3, 6, 7)), "weight": np.array(0.3)}


def _tv_run(fn, t, ctx):
    x, weight = t["x"], float(t["weight"])
    return {"beta_2": fn(x, weight=weight), "beta_1.5": fn(x, weight=weight, beta=1.5)}


def _tv_variant(kind):
    def wrong(x, weight=1.0, beta=2.0):
        ### BEGIN SOLUTION
        if kind == "separate":  # CS231n's anisotropic form over every row/column pair
            dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2)
            dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2)
            return weight * (dx.pow(beta / 2).sum() + dy.pow(beta / 2).sum())
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        squared = dx.pow(2) + dy.pow(2)
        if kind == "mean":
            return weight * (squared + (0 if beta == 2 else 1e-8)).pow(beta / 2).mean()
        return weight * squared.sum()  # beta ignored
        ### END SOLUTION
    return wrong


register(Exercise(
    name="tv_loss", module="losses", function="tv_loss",
    make_inputs=_tv_inputs, run=_tv_run, tolerance=1e-6,
    hint="tv = weight * sum over images, channels and the (H-1)x(W-1) pixels of (dx^2 + dy^2)^(beta/2), "
         "dx = x[..., :-1, 1:] - x[..., :-1, :-1], dy = x[..., 1:, :-1] - x[..., :-1, :-1]; use slicing, "
         "not loops",
    mistakes=(
        Mistake("separate", "dx^2 and dy^2 are summed separately over all rows/columns; the formula sums "
                "(dx^2 + dy^2)^(beta/2) over the pixels that have both a right and a lower neighbour",
                _tv_variant("separate")),
        Mistake("mean", "mean instead of sum over pixels", _tv_variant("mean")),
        Mistake("beta", "beta is ignored: raise (dx^2 + dy^2) to the power beta/2", _tv_variant("beta")),
    ),
))
