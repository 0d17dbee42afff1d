"""Hidden cases: inputs drawn at grading time from the instructor's seed.

The public case of each exercise (``Exercise.make_inputs``, stored in ``data/checks``) is what the
check cells run. :func:`hidden_inputs` draws other inputs of the same kind (shapes, values, photos,
targets, settings) from ``(seed, exercise, case)``: the same seed gives the same inputs, so a regrade
is reproducible; the grader computes the expected outputs with its own reference implementation
(:func:`reference_outputs`), never from stored files. A submission that returns stored answers, or
anything not computed from its inputs, fails them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch

from ..course.exercise_registry import Context, _photo, _t, get_exercise

__all__ = ["HIDDEN_BUILDERS", "hidden_inputs", "reference_outputs"]

PHOTOS = tuple(f"imagenet_{i:02d}" for i in range(20)) + ("coffee", "chelsea", "astronaut", "rocket")
SIZE = 48


class _Draw:
    """What a builder may use: the random generator and the grader's model (for top classes)."""

    def __init__(self, rng: np.random.Generator, ctx: Context):
        self.rng, self.ctx = rng, ctx

    def photos(self, n: int) -> np.ndarray:
        """``n`` different sample photos, each maybe mirrored, as uint8 (n, 3, 48, 48)."""
        names = self.rng.choice(len(PHOTOS), size=n, replace=False)
        out = [_photo(PHOTOS[i], SIZE) for i in names]
        return np.stack([x[:, :, ::-1] if self.rng.random() < 0.5 else x for x in out]).copy()

    def top_classes(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            scores = self.ctx.model(torch.float32)(torch.as_tensor(images).float() / 255)
        return scores.argmax(dim=1).numpy()

    def normal(self, *shape, scale=1.0):
        return self.rng.standard_normal(shape) * scale

    def ints(self, low, high, size=None):
        return self.rng.integers(low, high, size=size)

    def targets(self, n):
        return self.rng.integers(0, 1000, size=n)

    def uniform(self, low, high, size=None):
        return self.rng.uniform(low, high, size)


def _gram(d):
    return {"features": d.normal(d.ints(1, 4), d.ints(2, 6), d.ints(2, 7), d.ints(2, 7))}


def _content(d):
    shape = (1, d.ints(2, 6), d.ints(2, 6), d.ints(2, 6))
    return {"features": d.normal(*shape), "target": d.normal(*shape), "weight": np.array(d.uniform(0.1, 3))}


def _style(d):
    c0, c1 = d.ints(2, 6), d.ints(2, 6)
    return {
        "features_0": d.normal(1, c0, d.ints(3, 7), d.ints(3, 7)),
        "features_1": d.normal(1, c1, d.ints(2, 5), d.ints(2, 5)),
        "target_0": d.normal(1, c0, c0, scale=0.5),
        "target_1": d.normal(1, c1, c1, scale=0.5),
        "weights": d.uniform(0.1, 2, 2),
    }


def _tv(d):
    return {
        "x": d.uniform(0, 1, (d.ints(1, 3), 3, d.ints(3, 9), d.ints(3, 9))),
        "weight": np.array(d.uniform(0.1, 2)),
    }


def _saliency(d):
    return {"images": d.photos(1), "target": d.targets(1)}


def _occlusion(d):
    image = d.photos(1)
    return {
        "image": image,
        "target": np.array(int(d.top_classes(image)[0])),
        "window": np.array(16),
        "stride": np.array(8),
        "batch_size": np.array(int(d.ints(3, 12))),
        "grey": np.array(round(float(d.uniform(0.2, 0.8)), 3)),
    }


def _guided(d):
    shape = (d.ints(1, 3), d.ints(2, 5), d.ints(2, 6), d.ints(2, 6))
    return {"grad_output": d.normal(*shape), "activation": np.clip(d.normal(*shape, scale=5), 0, 6)}


def _fooling(d):
    return {"images": d.photos(2), "target": d.targets(2), "step_size": np.array(d.uniform(0.1, 1))}


def _class_viz(d):
    noise = np.clip(0.5 + 0.1 * d.normal(1, 3, SIZE, SIZE), 0, 1)
    return {
        "image": np.round(noise * 255).astype(np.uint8),
        "target": d.targets(1),
        "learning_rate": np.array(d.uniform(1, 5)),
        "l2_reg": np.array(d.uniform(0.01, 0.1)),
    }


def _dream(d):
    return {
        "image": d.photos(1),
        "step_size": np.array(d.uniform(0.01, 0.1)),
        "jitter": np.array(d.ints(2, 9)),
        "seed": np.array(d.ints(0, 1000)),
    }


def _receptive_field(d):
    blocks = np.sort(d.rng.choice(np.arange(0, 16), size=2, replace=False))
    return {"input_size": np.array(int(d.rng.choice([48, 64, 96]))), "blocks": blocks}


def _neighbours(d):
    n_q, n_g, dims = d.ints(2, 6), d.ints(6, 12), (d.ints(1, 4), 2, 2)
    queries = d.normal(n_q, *dims)
    gallery = np.concatenate([d.normal(n_g, *dims), queries])
    exclude = np.where(d.uniform(0, 1, n_q) < 0.7, n_g + np.arange(n_q), -1)
    return {"queries": queries, "gallery": gallery, "k": np.array(d.ints(1, 5)), "exclude": exclude}


def _instance_norm(d):
    return {
        "x": d.normal(d.ints(1, 4), d.ints(1, 5), d.ints(2, 7), d.ints(2, 7), scale=d.uniform(0.5, 4)) + 1,
        "eps": np.array(d.uniform(0.01, 0.5)),
    }


def _mix(d):
    c0, c1 = d.ints(2, 6), d.ints(2, 6)
    w = d.uniform(0.1, 1, 2)
    return {
        "a_0": d.normal(1, c0, c0),
        "a_1": d.normal(1, c1, c1),
        "b_0": d.normal(1, c0, c0),
        "b_1": d.normal(1, c1, c1),
        "weights": w / w.sum(),
    }


def _grad_cam(d):
    return {"images": d.photos(1), "target": d.targets(1)}


def _ig(d):
    images = d.photos(1)
    return {
        "images": images,
        "target": d.top_classes(images),
        "noise": d.ints(0, 256, (1, 3, SIZE, SIZE)).astype(np.uint8),
        "steps": np.array(2),
        "batch_size": np.array(2),
    }


#: For each exercise, ``builder(draw) -> inputs`` with the keys of its public inputs.
HIDDEN_BUILDERS: dict[str, Callable] = {
    "gram_matrix": _gram,
    "content_loss": _content,
    "style_loss": _style,
    "tv_loss": _tv,
    "saliency_map": _saliency,
    "occlusion_map": _occlusion,
    "guided_relu_grad": _guided,
    "fooling_step": _fooling,
    "class_visualization_step": _class_viz,
    "deepdream_step": _dream,
    "receptive_field": _receptive_field,
    "nearest_neighbours": _neighbours,
    "instance_norm": _instance_norm,
    "mix_styles": _mix,
    "grad_cam": _grad_cam,
    "integrated_gradients": _ig,
}


def hidden_inputs(name: str, seed: int, case: int, ctx: Context | None = None) -> dict[str, np.ndarray]:
    """The inputs of hidden case ``case`` (1, 2, ...) of exercise ``name`` for the instructor's ``seed``."""
    get_exercise(name)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(case)])
    return {k: np.asarray(v) for k, v in HIDDEN_BUILDERS[name](_Draw(rng, ctx or Context())).items()}


def reference_outputs(name: str, inputs: dict, ctx: Context | None = None) -> dict[str, np.ndarray]:
    """The grader's own answer: the reference implementation (the solution tree's function) on ``inputs``."""
    from ..course.grading import _one_thread, _to_numpy

    exercise = get_exercise(name)
    tensors = {k: _t(v) for k, v in inputs.items()}
    with _one_thread(), torch.random.fork_rng(devices=[]):
        raw = exercise.run(exercise.reference(), tensors, ctx or Context())
    return {k: _to_numpy(v, f"the reference result ({k})") for k, v in raw.items()}
