"""Golden checks for the exercises: ``check("gram_matrix")`` says PASS or FAIL with a hint.

Every exercise is a function of ``cs_utils`` whose body the student writes (the
solution tree marks it with ``### BEGIN SOLUTION`` / ``### END SOLUTION``). The
registry :data:`EXERCISES` holds, for each one, fixed inputs (small seeded
tensors, or a real photo through the pretrained EfficientNet-Lite0 in float64),
how to call the function, a tolerance and the usual mistakes. The reference
outputs live in ``data/checks/<name>.npz``, written by::

    make checks        # python -m cs_utils.course.grading --generate

Regenerating on the same machine gives byte-identical files (fixed key order,
no timestamps, one thread). The outputs of typical wrong implementations are
stored next to the right ones, so a failing check names the mistake it sees.

In a notebook::

    cs.check_exercise("saliency_map")          # the function importable from cs_utils
    cs.check_exercise("saliency_map", my_fn)   # or any function with its signature

prints ``PASS saliency_map (rel. error 3.1e-07)`` or ``FAIL saliency_map (rel.
error 0.42): <hint>`` and raises ``AssertionError`` on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .exercise_registry import (
    CHECKS_DIR,
    EXERCISES,
    PACKAGE,
    Context,
    Exercise,
    _t,
    exercise_names,  # noqa: F401 - callers list the exercises here, once every module has registered its own
    get_exercise,
    rel_error,
)

__all__ = [
    "CheckResult",
    "check",
    "compare",
    "evaluate",
    "generate",
    "load_golden",
    "write_npz",
]

#: The modules that register the exercises, in the order the grader reports them.
EXERCISE_MODULES = ("exercises_losses", "exercises_pixels", "exercises_layers",
                    "exercises_attribution")
for _module in EXERCISE_MODULES:
    importlib.import_module(f".{_module}", __package__)

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


MISTAKE_SAMPLES = 256


def _sample(array: np.ndarray) -> np.ndarray:
    """A fixed spread of at most MISTAKE_SAMPLES elements: enough to recognise a mistake, small to store."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    if flat.size <= MISTAKE_SAMPLES:
        return flat
    return flat[np.linspace(0, flat.size - 1, MISTAKE_SAMPLES).round().astype(np.int64)]


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
            # float32 keeps every element within 6e-8 relative error: enough for tolerances >= 1e-6
            stored = np.float32 if exercise.tolerance >= 1e-6 else np.float64
            arrays.update({f"outputs/{k}": v if k.startswith("calls_") else v.astype(stored)
                           for k, v in right.items()})
            for mistake in exercise.mistakes:
                wrong = _outputs(exercise, mistake.fn, inputs, ctx)
                arrays.update({f"mistakes/{mistake.key}/{k}": _sample(v) for k, v in wrong.items()
                               if not k.startswith("calls_")})
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
        raise FileNotFoundError(f"no golden file {path}; run `make checks` in the solution tree")
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

    def model(self, dtype=torch.float64):
        model = super().model(dtype)
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
            return fail("the model's train/eval mode changed; use cs_utils.hooks.evaluating(model)")
        if flags != before[2]:
            return fail("requires_grad of the model's parameters changed; differentiate with respect to the "
                        "image only (torch.autograd.grad(loss, [x]))")
    return compare(exercise, got, expected, mistakes, seconds)


def compare(exercise: Exercise, got: dict, expected: dict, mistakes: dict | None = None,
            seconds: float = 0.0) -> CheckResult:
    """Compare the outputs ``got`` (numpy arrays) of a candidate with ``expected``; name a stored
    mistake (``mistakes[key]``: sampled outputs) when one matches."""
    name = exercise.name
    got, expected, mistakes = dict(got), dict(expected), mistakes or {}

    def fail(message, err=None):
        return CheckResult(name, "fail", err, message, seconds)

    calls = {}
    for key in [k for k in expected if k.startswith("calls_")]:
        want = int(expected.pop(key))
        made = np.asarray(got.pop(key, want), dtype=np.float64)
        if made.size != 1 or not np.isfinite(made).all():
            return fail(f"the count {key!r} is not one number")
        calls[key] = (int(made.reshape(())), want)
    for key, want in expected.items():
        if key not in got:
            return fail(f"no output {key!r}")
        if got[key].shape != want.shape:
            return fail(f"the result ({key}) has shape {tuple(got[key].shape)}, expected "
                        f"{tuple(want.shape)}. {exercise.hint}")
    err = max(rel_error(got[k], expected[k]) for k in expected)
    if err <= exercise.tolerance:
        for made, enough in calls.values():
            if made > enough:
                return fail(f"right values, but {made} forward passes where {enough} are enough: "
                            f"{exercise.vectorize_hint}", err)
        return CheckResult(name, "pass", err, "", seconds)
    by_mistake = {m.key: m for m in exercise.mistakes}
    for key, wrong in mistakes.items():
        if key in by_mistake and all(k in got and _sample(got[k]).shape == v.shape for k, v in wrong.items()):
            distance = max(rel_error(_sample(got[k]), v) for k, v in wrong.items())
            if distance <= max(exercise.tolerance * 10, 1e-5):
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
    parser = argparse.ArgumentParser(prog="python -m cs_utils.course.grading",
                                     description=__doc__.splitlines()[0])
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
