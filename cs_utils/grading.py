"""Golden checks for the exercises: ``check("gram_matrix")`` says PASS or FAIL with a hint.

Every exercise is a function of ``cs_utils`` whose body the student writes (the
solution tree marks it with ``### BEGIN SOLUTION`` / ``### END SOLUTION``). The
registry :data:`EXERCISES` holds, for each one, fixed inputs (small seeded
tensors, or a real photo through the pretrained EfficientNet-Lite0 in float64),
how to call the function, a tolerance and the usual mistakes. The reference
outputs live in ``data/checks/<name>.npz``, written by::

    python -m cs_utils.grading --generate        # or: make checks

Regenerating on the same machine gives byte-identical files (fixed key order,
no timestamps, one thread). The outputs of typical wrong implementations are
stored next to the right ones, so a failing check names the mistake it sees.

In a notebook::

    cs_utils.grading.check("saliency_map")          # the function importable from cs_utils
    cs_utils.grading.check("saliency_map", my_fn)   # or any function with its signature

prints ``PASS saliency_map (rel. error 3.1e-07)`` or ``FAIL saliency_map (rel.
error 0.42): <hint>`` and raises ``AssertionError`` on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import math
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import DATA_DIR

__all__ = [
    "CHECKS_DIR",
    "EXERCISES",
    "CheckResult",
    "Exercise",
    "Mistake",
    "check",
    "evaluate",
    "exercise_names",
    "generate",
    "get_exercise",
    "load_golden",
    "rel_error",
    "write_npz",
]

CHECKS_DIR = DATA_DIR / "checks"
PACKAGE = "cs_utils"


def rel_error(x, y) -> float:
    """``max(|x - y| / max(1e-8, |x| + |y|))`` over all elements (CS231n's relative error)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    err = np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))
    if np.isnan(err).any():
        return math.inf
    return float(err.max())


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Mistake:
    """A typical wrong implementation: ``fn`` has the exercise's signature and returns what
    that mistake returns; its outputs are stored in the golden file so a FAIL can name it."""

    key: str
    hint: str
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    """One graded function.

    ``make_inputs()`` builds the fixed inputs (a dict of numpy arrays, stored in the golden
    file); ``run(fn, inputs, ctx)`` calls a candidate ``fn`` on them (tensors made from the
    stored arrays) and returns a dict of outputs. ``hint`` names the usual mistakes when no
    stored mistake matches.
    """

    name: str
    module: str
    function: str
    make_inputs: Callable[[], dict]
    run: Callable
    hint: str
    tolerance: float = 1e-6
    mistakes: tuple[Mistake, ...] = ()
    points: int = 1
    uses_model: bool = False

    @property
    def path(self) -> str:
        return f"{PACKAGE}/{self.module}.py"

    def reference(self) -> Callable:
        """The function importable from ``cs_utils.<module>`` (the solution in the solution tree)."""
        return getattr(importlib.import_module(f"{PACKAGE}.{self.module}"), self.function)


EXERCISES: dict[str, Exercise] = {}


def _register(exercise: Exercise) -> Exercise:
    EXERCISES[exercise.name] = exercise
    return exercise


def exercise_names() -> list[str]:
    return list(EXERCISES)


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        import difflib

        close = difflib.get_close_matches(str(name), EXERCISES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(EXERCISES)}.{hint}")
    return EXERCISES[name]


class Context:
    """What ``run`` may need besides the inputs: a fresh pretrained model per call."""

    def model(self) -> torch.nn.Module:
        from .models import load_model

        return load_model("efficientnet_lite0").double()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))


def _photo(name: str, size: int) -> np.ndarray:
    """A sample photo as uint8 (3, size, size): stored exactly, used as float64 / 255."""
    from .image import load_image

    x = load_image(name, size)[0]
    return np.round(x.numpy() * 255).astype(np.uint8)


def _image(array) -> torch.Tensor:
    return (torch.from_numpy(np.array(array)).double() / 255.0).unsqueeze(0)


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# ---- losses


def _gram_inputs():
    rng = _rng(0)
    return {"features": rng.standard_normal((2, 4, 5, 6))}


def _gram_run(fn, t, ctx):
    return {"normalized": fn(t["features"]), "unnormalized": fn(t["features"], normalize=False)}


def _gram_variant(scale):
    def wrong(features, normalize=True):
        from .losses import gram_matrix

        n, c, h, w = features.shape
        return gram_matrix(features, normalize=False) / (scale(n, c, h, w) if normalize else 1)
    return wrong


_register(Exercise(
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
        diff = features - target
        if kind == "mean":
            return weight * diff.pow(2).mean()
        if kind == "no_weight":
            return diff.pow(2).sum()
        return weight * diff.pow(2).sum().sqrt()
    return wrong


_register(Exercise(
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
        from .losses import gram_matrix

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
    return wrong


_register(Exercise(
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
    return wrong


_register(Exercise(
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


# --------------------------------------------------------------------------- golden files


def write_npz(path: Path, arrays: dict) -> None:
    """``np.savez_compressed`` without timestamps: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue())
    Path(path).write_bytes(buf.getvalue())


def _to_numpy(value, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, (int, float, np.ndarray, np.floating, np.integer)):
        return np.asarray(value, dtype=np.float64)
    raise TypeError(f"{what} is a {type(value).__name__}, expected a tensor")


def _outputs(exercise: Exercise, fn: Callable, inputs: dict, ctx: Context) -> dict[str, np.ndarray]:
    tensors = {k: _t(v) for k, v in inputs.items()}
    raw = exercise.run(fn, tensors, ctx)
    return {k: _to_numpy(v, f"the result ({k})") for k, v in raw.items()}


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate(names=None, out_dir: Path | None = None, *, verbose: bool = True) -> list[Path]:
    """Write ``<out_dir>/<name>.npz`` (default ``data/checks``) from the reference implementations.

    Keys: ``inputs/*`` (the fixed inputs), ``outputs/*`` (the reference results) and
    ``mistakes/<key>/*`` (what each typical mistake returns).
    """
    out_dir = Path(out_dir) if out_dir is not None else CHECKS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context()
    paths = []
    with _one_thread(), torch.random.fork_rng(devices=[]):
        for name in names or list(EXERCISES):
            exercise = get_exercise(name)
            torch.manual_seed(0)
            inputs = exercise.make_inputs()
            arrays = {f"inputs/{k}": np.asarray(v) for k, v in inputs.items()}
            right = _outputs(exercise, exercise.reference(), inputs, ctx)
            arrays.update({f"outputs/{k}": v for k, v in right.items()})
            for mistake in exercise.mistakes:
                wrong = _outputs(exercise, mistake.fn, inputs, ctx)
                arrays.update({f"mistakes/{mistake.key}/{k}": v for k, v in wrong.items()})
            path = out_dir / f"{name}.npz"
            write_npz(path, arrays)
            paths.append(path)
            if verbose:
                print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return paths


def load_golden(name: str, checks_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """``(inputs, outputs, mistakes)`` from an exercise's golden file; ``mistakes[key]``: outputs."""
    path = Path(checks_dir or CHECKS_DIR) / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(f"no golden file {path}; run `make checks` "
                                "(python -m cs_utils.grading --generate)")
    inputs, outputs, mistakes = {}, {}, {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            kind, _, rest = key.partition("/")
            if kind == "inputs":
                inputs[rest] = npz[key]
            elif kind == "outputs":
                outputs[rest] = npz[key]
            elif kind == "mistakes":
                mistake, _, out = rest.partition("/")
                mistakes.setdefault(mistake, {})[out] = npz[key]
    return inputs, outputs, mistakes


# --------------------------------------------------------------------------- checking


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is "pass", "fail", "not implemented" or "error"."""

    name: str
    status: str
    rel_error: float | None = None
    message: str = ""
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        if self.passed:
            return f"PASS {self.name} (rel. error {self.rel_error:.1e})"
        if self.rel_error is not None:
            return f"FAIL {self.name} (rel. error {self.rel_error:.2g}): {self.message}"
        if self.status == "fail":
            return f"FAIL {self.name}: {self.message}"
        return f"FAIL {self.name} ({self.status}): {self.message}"


def _not_implemented_message(exercise: Exercise, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    raiser = frames[-1].name if frames else exercise.function
    others = [e for e in EXERCISES.values() if e.function == raiser and e.name != exercise.name]
    if raiser != exercise.function and others:
        return (f"{exercise.function} calls {raiser}, which is not implemented yet: write {raiser} in "
                f"{others[0].path} first, then {exercise.function} in {exercise.path}")
    return f"not implemented yet: write {exercise.function} in {exercise.path}"


def _error_message(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (in {last.name}, {Path(last.filename).name} line {last.lineno})"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(exc).__name__}: {first}{where}"


def _hooks_and_modes(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
    return hooks, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


class _WatchedContext(Context):
    """Hands out models and remembers them, to check afterwards that nothing was left changed."""

    def __init__(self):
        self.models = []

    def model(self):
        model = super().model()
        self.models.append((model, _hooks_and_modes(model)))
        return model


def evaluate(name: str, fn: Callable | None = None, *, checks_dir: Path | None = None) -> CheckResult:
    """Run ``fn`` (default: the function importable from cs_utils) on the exercise's stored inputs
    and compare with the stored outputs. Never raises for a wrong ``fn``: the result says why."""
    exercise = get_exercise(name)
    inputs, expected, mistakes = load_golden(name, checks_dir)
    start = time.perf_counter()
    if fn is None:
        try:
            fn = exercise.reference()
        except Exception as exc:  # noqa: BLE001 - a broken module is a failed check
            return CheckResult(name, "error", message=f"cannot import {exercise.function} from "
                               f"{PACKAGE}.{exercise.module}: {_error_message(exc)}")
    ctx = _WatchedContext()
    tensors = {k: _t(v) for k, v in inputs.items()}
    originals = {k: v.clone() for k, v in tensors.items()}
    try:
        with _one_thread():
            raw = exercise.run(fn, tensors, ctx)
    except NotImplementedError as exc:
        return CheckResult(name, "not implemented", message=_not_implemented_message(exercise, exc),
                           seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the student's exception is the check's result
        return CheckResult(name, "error", message=_error_message(exc), seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start

    def fail(message, err=None):
        return CheckResult(name, "fail", err, message, seconds)

    try:
        got = {k: _to_numpy(v, f"the result ({k})") for k, v in raw.items()}
    except TypeError as exc:
        return fail(f"{exc}; return the result (did you forget `return`?)")

    for key, tensor in tensors.items():
        if tensor.shape != originals[key].shape or not torch.equal(tensor, originals[key]):
            return fail(f"the input {key!r} was changed in place; work on a copy (x.clone()) or out of place")
    for model, before in ctx.models:
        hooks, modes, flags = _hooks_and_modes(model)
        if hooks != before[0]:
            return fail("hooks were left on the model; remove them (use a context manager or try/finally)")
        if modes != before[1]:
            return fail("the model's train/eval mode changed; use cs_utils.evaluating(model)")
        if flags != before[2]:
            return fail("requires_grad of the model's parameters changed; differentiate with respect to the "
                        "image only (torch.autograd.grad(loss, [x]))")
    for key, want in expected.items():
        if key not in got:
            return fail(f"no output {key!r}")
        if got[key].shape != want.shape:
            return fail(f"the result ({key}) has shape {tuple(got[key].shape)}, expected "
                        f"{tuple(want.shape)}. {exercise.hint}")
    err = max(rel_error(got[k], expected[k]) for k in expected)
    if err <= exercise.tolerance:
        return CheckResult(name, "pass", err, "", seconds)
    by_mistake = {m.key: m for m in exercise.mistakes}
    for key, wrong in mistakes.items():
        if key in by_mistake and all(k in got and got[k].shape == v.shape for k, v in wrong.items()):
            if max(rel_error(got[k], v) for k, v in wrong.items()) <= max(exercise.tolerance * 10, 1e-5):
                return fail(f"{by_mistake[key].hint}.", err)
    if err < 1e-3:
        return fail(f"close, but not within {exercise.tolerance:.0e}: keep the inputs' dtype (float64; "
                    "no .float()) and add no epsilon or clamp the formula does not have", err)
    if not all(np.isfinite(v).all() for v in got.values()):
        return fail(f"the result contains NaN or inf. {exercise.hint}.", err)
    return fail(f"{exercise.hint}.", err)


def check(name: str, fn: Callable | None = None) -> None:
    """Print ``PASS name (rel. error ...)`` or ``FAIL name (...): hint``; raise AssertionError on FAIL."""
    result = evaluate(name, fn)
    print(result.line())
    if not result.passed:
        raise AssertionError(result.line())


def _signature(exercise: Exercise) -> str:
    try:
        return f"{exercise.function}{inspect.signature(exercise.reference())}"
    except Exception:  # noqa: BLE001
        return exercise.function


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs_utils.grading", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="exercises (default: all)")
    parser.add_argument("--generate", action="store_true", help="write the golden files from the solutions")
    parser.add_argument("--out", type=Path, default=None, help="folder for --generate (default data/checks)")
    parser.add_argument("--list", action="store_true", help="list the exercises")
    args = parser.parse_args(argv)
    if args.list:
        for exercise in EXERCISES.values():
            print(f"{exercise.name:28s} {exercise.path:28s} {_signature(exercise)}")
        return 0
    if args.generate:
        generate(args.names or None, args.out)
        return 0
    failed = 0
    for name in args.names or list(EXERCISES):
        result = evaluate(name)
        print(result.line())
        failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
