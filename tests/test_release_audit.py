"""The student release answers no exercise by itself: an audit of every callable it ships.

Everything under ``cs_utils/`` but ``cs_utils/instructor/`` ships to students with the solutions
stripped. If shipped code (a fast path, an engine, a helper) computed an exercise's answer without
calling the exercise's function, a submission could delegate to it and pass, hidden cases included.

The audit builds the release as the grading sandbox does
(:func:`cs_utils.instructor.sandbox_files.build_base`),
imports every module of it in a fresh ``python -I`` with the release first on ``sys.path`` (the
editable install's finders removed, as the sandbox runner does), and collects every callable it can
reach: module-level functions, lambdas and classes (also those inside module-level dicts, lists and
instances), the classes' own methods (and ``apply`` of autograd functions), instances built with no
arguments (called, and their bound methods), and instances built from an exercise's own arguments
(called with them, and their methods). Each candidate goes through every exercise's ``run`` on its
public inputs, as the sandbox calls a submission (``ctx.model(dtype)`` is the pretrained
EfficientNet-Lite0; a model a candidate spoiled is replaced), with a time limit per call (2 s, or
five times the solution's own time), and ``grading.compare`` judges the result. No candidate may
pass. A positive control keeps the audit honest: the instructor's own solution of each exercise
(loaded from the instructor's tree in place of the release's module, as the sandbox loads a
submission) passes through the same harness, first; then the release's modules are put back.

Before ``cs_utils/engine/`` it found ``cs_utils.losses.gram_losses`` passing ``style_loss``: the fused
Gram node computed the style loss by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cs_utils.course import grading
from cs_utils.instructor.sandbox_files import build_base

ROOT = Path(__file__).resolve().parent.parent
#: Seconds one candidate may take on one exercise, or five times the solution's own time if that is
#: longer (the exercises take well under 1 s each; integrated gradients about 1 s).
CALL_SECONDS = 2.0
#: Release modules that may fail to import because they need an optional extra: module -> extra.
#: Every other module must import.
OPTIONAL_EXTRAS: dict[str, str] = {}
#: Fewer candidates than this means the audit stopped looking (it finds about 1450).
MIN_CANDIDATES = 500

RUNNER = r'''
"""python -I audit_runner.py BASE WORK INSTRUCTOR_ROOT CALL_SECONDS: writes WORK/report.json."""
import contextlib
import copy
import functools
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import signal
import socket
import sys
import time
import traceback
import warnings


def drop_editable_finders():
    """As cs_utils/instructor/sandbox_runner.py: the editable install's finder would import the
    instructor's tree."""
    sys.meta_path[:] = [
        f for f in sys.meta_path
        if "editable" not in (getattr(f, "__module__", "") or "").lower()
        and "editable" not in getattr(f, "__name__", "").lower()
    ]


class CallTimeout(BaseException):
    """A candidate ran out of time (a BaseException, so `except Exception` does not swallow it)."""


class Built(BaseException):
    """Raised once an instance was built from an exercise's arguments: the rest is not wanted."""


def on_alarm(signum, frame):
    raise CallTimeout()


@contextlib.contextmanager
def time_limit(seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)   # and again every 0.25 s until it stops
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


DEPTH = 5   # how deep into module-level containers and instances the search goes
LAZY_IMPORTS = ("nbformat", "nbconvert.exporters", "pypdf", "torchvision.transforms.v2")
CONTROL_SECONDS = 60.0
SLOWER = 5.0   # a candidate may take this many times the solution's time (at least CALL_SECONDS)


def no_network(*args, **kwargs):
    raise OSError("the release audit runs without network")


def main(base, work, instructor_root, call_seconds):
    drop_editable_finders()
    sys.path[:0] = [base]
    socket.socket.connect = socket.socket.connect_ex = no_network
    socket.create_connection = no_network
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, on_alarm)
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import cs_utils
    from cs_utils.models import load_model

    where = os.path.realpath(cs_utils.__file__)
    assert where.startswith(os.path.realpath(base) + os.sep), f"imported {where}, not the release"
    report = {"cs_utils": where, "import_errors": {}, "passes": [], "timeouts": [], "control": {},
              "control_seconds": {}}
    started = time.perf_counter()

    # ------------------------------------------------------------------ every module of the release
    package = os.path.join(base, "cs_utils")
    names = []
    for folder, dirs, files in os.walk(package):
        dirs.sort()
        for file in sorted(files):
            if file.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, file), base)[:-3].split(os.sep)
                names.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except BaseException as exc:   # noqa: BLE001 - reported; the test decides
            report["import_errors"][name] = f"{type(exc).__name__}: {exc}"
    report["modules"] = len(modules)
    # what the release's functions import when first called (the written answers' PDF): imported once
    # here, so that no candidate's time limit runs out on an import, over and over
    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from cs_utils.course import grading

    def owned(obj):
        module = getattr(obj, "__module__", None)
        return isinstance(module, str) and (module == "cs_utils" or module.startswith("cs_utils."))

    # ------------------------------------------------------------------ every callable reachable
    candidates, classes, seen = [], [], set()

    def named(label, obj):
        """Where ``obj`` is defined (``cs_utils.engine.gram.gram_losses``), else the path it was found by."""
        qualname = getattr(obj, "__qualname__", None)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if owned(obj) and isinstance(qualname, str) and "<" not in qualname:
                return f"{obj.__module__}.{qualname}"
        return label

    def add(label, fn):
        if id(fn) not in seen:
            seen.add(id(fn))
            candidates.append((named(label, fn), fn))

    def visit(label, value, depth):
        if inspect.isclass(value):
            if owned(value) and id(value) not in seen:
                seen.add(id(value))
                classes.append((named(label, value), value))
        elif isinstance(value, functools.partial):
            add(label, value)
        elif callable(value) and owned(value) and not inspect.ismodule(value):
            add(label, value)
        elif isinstance(value, dict) and depth < DEPTH:
            for key, item in list(value.items()):
                visit(f"{label}[{key!r}]", item, depth + 1)
        elif isinstance(value, (list, tuple)) and depth < DEPTH:
            for i, item in enumerate(value):
                visit(f"{label}[{i}]", item, depth + 1)
        elif owned(type(value)) and depth < DEPTH and id(value) not in seen:   # an instance made at import
            seen.add(id(value))
            instance_members(label, value, depth)

    def own_methods(cls):
        """(name, raw attribute) of what the class and its cs_utils bases define."""
        found = {}
        for klass in reversed(cls.__mro__):
            if owned(klass):
                found.update({k: v for k, v in vars(klass).items() if not isinstance(v, property)})
        return sorted(found.items())

    def instance_members(label, obj, depth):
        if callable(obj):
            add(label, obj)
        for name, raw in own_methods(type(obj)):
            if callable(raw) or isinstance(raw, (staticmethod, classmethod)):
                try:
                    add(f"{label}.{name}", getattr(obj, name))
                except BaseException:   # noqa: BLE001
                    pass
        for name, item in list(getattr(obj, "__dict__", {}).items()):
            visit(f"{label}.{name}", item, depth + 1)

    for module in modules:
        for name, value in sorted(vars(module).items()):
            if not (name.startswith("__") and name.endswith("__")):
                visit(f"{module.__name__}.{name}", value, 0)
    module_level = len(candidates)
    built = 0
    for label, cls in list(classes):
        add(label, cls)                                        # construction from the arguments
        for name, raw in own_methods(cls):
            if isinstance(raw, (staticmethod, classmethod)) or inspect.isfunction(raw):
                add(f"{label}.{name}", getattr(cls, name))     # static, class and unbound methods
        if isinstance(cls, type) and issubclass(cls, torch.autograd.Function):
            add(f"{label}.apply", cls.apply)
        try:
            with time_limit(call_seconds):
                instance = cls()
        except BaseException:   # noqa: BLE001 - most classes need arguments
            continue
        built += 1
        instance_members(f"{label}()", instance, DEPTH - 1)
    report["classes"], report["built_without_arguments"] = len(classes), built

    # ------------------------------------------------------------------ the harness
    pristine = {torch.float32: load_model("efficientnet_lite0")}
    pristine[torch.float64] = copy.deepcopy(pristine[torch.float32]).to(torch.float64)

    def fingerprint(model):
        modules_ = tuple((id(m), m.training, len(m._forward_hooks), len(m._forward_pre_hooks),
                          len(m._backward_hooks), len(getattr(m, "_backward_pre_hooks", {})),
                          tuple(m._modules), "forward" in vars(m)) for m in model.modules())
        tensors = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.requires_grad)
                        for t in itertools.chain(model.parameters(), model.buffers()))
        return modules_, tensors

    class Models:
        """The pretrained model in each dtype; a copy spoiled by a candidate is replaced."""

        def __init__(self):
            self.working = {d: copy.deepcopy(m) for d, m in pristine.items()}
            self.prints = {d: fingerprint(m) for d, m in self.working.items()}
            self.used = set()

        def model(self, dtype=None):
            dtype = dtype or torch.float64
            self.used.add(dtype)
            return self.working[dtype]

        def restore(self):
            for dtype in self.used:
                if fingerprint(self.working[dtype]) != self.prints[dtype]:
                    self.working[dtype] = copy.deepcopy(pristine[dtype])
                    self.prints[dtype] = fingerprint(self.working[dtype])
            self.used.clear()

    models = Models()

    class Context:
        """What the sandbox hands exercise.run: ``model(dtype)``, the pretrained Lite0."""

        def model(self, dtype=None):
            return models.model(dtype)

    def outputs(raw):
        """The result as the sandbox runner reads it back (tensors and plain numbers), or None."""
        if not isinstance(raw, dict):
            return None
        got = {}
        for key, value in raw.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu()
                floating = value.is_floating_point() or value.dtype == torch.bool
                got[key] = (value.double() if floating else value.long()).numpy()
            elif isinstance(value, (bool, int, float, np.integer, np.floating)):
                got[key] = np.asarray(value, dtype=np.float64)
            elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                got[key] = value
            else:
                return None
        return got

    exercises = {}
    for name in grading.exercise_names():
        with np.load(os.path.join(work, f"{name}.inputs.npz"), allow_pickle=False) as npz:
            inputs = {k: npz[k] for k in npz.files}
        with np.load(os.path.join(work, f"{name}.expected.npz"), allow_pickle=False) as npz:
            expected = {k: npz[k] for k in npz.files}
        exercises[name] = (grading.get_exercise(name), inputs, expected)

    def reset():
        torch.set_grad_enabled(True)
        torch.set_num_threads(1)
        torch.set_default_dtype(torch.float32)
        os.chdir(work)
        models.restore()

    calls = [0]

    def attempt(name, fn, seconds=call_seconds):
        """'pass', 'fail', 'error' or 'timeout': ``fn`` as the exercise's function on its public case."""
        exercise, inputs, expected = exercises[name]
        calls[0] += 1
        try:
            try:
                with time_limit(seconds):
                    tensors = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
                    got = outputs(exercise.run(fn, tensors, Context()))
                    if got is None:
                        return "fail"
                    return "pass" if grading.compare(exercise, got, dict(expected)).passed else "fail"
            finally:
                reset()
        except CallTimeout:
            return "timeout"
        except BaseException:   # noqa: BLE001 - whatever the candidate raised
            return "error"

    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)

    def quiet(flag):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(devnull if flag else saved[0], 1)
        os.dup2(devnull if flag else saved[1], 2)

    # ------------------------------------------------------------------ the positive control, first
    # Each exercise's solution from the instructor's tree in place of the release's module (as the sandbox
    # loads a submission), through the same harness; its time sets the exercise's limit for the
    # candidates (a leak does the same work). The release's modules are put back afterwards.
    quiet(True)
    modules_before = dict(sys.modules)
    attributes_before = {name: getattr(sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2], None)
                         for name in modules_before if name.startswith("cs_utils.")}
    for name, (exercise, _, _) in exercises.items():
        path = os.path.join(instructor_root, "cs_utils", *exercise.module.split(".")) + ".py"
        try:
            spec = importlib.util.spec_from_file_location(f"cs_utils.{exercise.module}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"cs_utils.{exercise.module}"] = module
            parent, _, leaf = f"cs_utils.{exercise.module}".rpartition(".")
            setattr(sys.modules[parent], leaf, module)
            spec.loader.exec_module(module)
            fn = getattr(module, exercise.function)
            assert os.path.realpath(inspect.getsourcefile(fn)) == os.path.realpath(path)
        except BaseException:   # noqa: BLE001
            report["control"][name] = "cannot import: " + traceback.format_exc(limit=2)
            continue
        start = time.perf_counter()   # the control proves the harness, not speed: a generous limit
        report["control"][name] = attempt(name, fn, seconds=CONTROL_SECONDS)
        report["control_seconds"][name] = time.perf_counter() - start
    for name in [n for n in sys.modules if n not in modules_before]:
        del sys.modules[name]
    sys.modules.update(modules_before)
    for name, value in attributes_before.items():
        if value is not None:
            setattr(sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2], value)
    limits = {name: max(call_seconds, SLOWER * report["control_seconds"].get(name, 0.0))
              for name in exercises}
    report["limits"] = limits

    # ------------------------------------------------------------------ every candidate, every exercise
    import matplotlib.pyplot as plt

    for i, (label, fn) in enumerate(candidates):
        for name in exercises:
            status = attempt(name, fn, limits[name])
            if status == "pass":
                report["passes"].append([name, label])
            elif status == "timeout":
                report["timeouts"].append([name, label])
        if i % 50 == 0:
            plt.close("all")
    # instances built from an exercise's own arguments: called with them, and their methods
    from_inputs = 0
    for label, cls in classes:
        for name in exercises:
            made = []

            def build(*args, _made=made, _cls=cls, **kwargs):
                _made.append(_cls(*args, **kwargs))
                raise Built()   # stop the exercise here: only the construction is wanted

            attempt(name, build)
            if not made:
                continue
            methods = [m for m, raw in own_methods(cls) if callable(raw)
                       and not (m.startswith("__") and m != "__call__")]
            for method in ["__call__", *methods] if "__call__" not in methods else methods:
                def call(*args, _cls=cls, _method=method, **kwargs):
                    return getattr(_cls(*args, **kwargs), _method)(*args, **kwargs)

                from_inputs += 1
                status = attempt(name, call, limits[name])
                if status == "pass":
                    report["passes"].append([name, f"{label}(<inputs>).{method}"])
                elif status == "timeout":
                    report["timeouts"].append([name, f"{label}(<inputs>).{method}"])
    plt.close("all")
    report.update(candidates=len(candidates), module_level=module_level, from_inputs=from_inputs)
    report["calls"], report["audit_seconds"] = calls[0], time.perf_counter() - started

    quiet(False)
    report["seconds"] = time.perf_counter() - started
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
    sys.stdout.flush()
    os._exit(0)   # skip teardown: a candidate may have left threads or widgets behind
'''


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> dict:
    base = build_base(tmp_path_factory.mktemp("release"))
    work = tmp_path_factory.mktemp("audit")
    for name in grading.exercise_names():
        inputs, outputs, _ = grading.load_golden(name)
        np.savez(work / f"{name}.inputs.npz", **inputs)
        np.savez(work / f"{name}.expected.npz", **outputs)
    runner = work / "audit_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "MPLCONFIGDIR": str(work),
           "MPLBACKEND": "Agg", "CS_UTILS_FAST": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-I", str(runner), str(base), str(work), str(ROOT), str(CALL_SECONDS)]
    proc = subprocess.run(command, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=600)
    report_path = work / "report.json"
    assert proc.returncode == 0 and report_path.exists(), \
        f"the audit runner failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["wall_seconds"] = time.perf_counter() - start
    print(f"\naudit of {report['cs_utils']}: {report['modules']} modules, {report['classes']} classes "
          f"({report['built_without_arguments']} built without arguments), {report['candidates']} candidates "
          f"({report['module_level']} at module level) and {report['from_inputs']} built from the inputs; "
          f"{report['calls']} calls in {report['audit_seconds']:.1f} s, "
          f"{report['wall_seconds']:.1f} s in all")
    for name, label in report["timeouts"]:
        print(f"  over {CALL_SECONDS} s (stopped): {label} on {name}")
    control = [f"{name} {status} ({report['control_seconds'].get(name, 0):.2f} s)"
               for name, status in report["control"].items()]
    print("  the solutions through the same harness: " + ", ".join(control))
    return report


def test_every_module_of_the_release_imports(audit):
    failed = {name: error for name, error in audit["import_errors"].items() if name not in OPTIONAL_EXTRAS}
    assert not failed, f"release modules that do not import: {failed}"
    assert audit["modules"] >= 40


def test_the_audit_looked(audit):
    assert audit["candidates"] >= MIN_CANDIDATES, f"only {audit['candidates']} candidates collected"
    assert audit["from_inputs"] > 0 and audit["built_without_arguments"] > 0


def test_the_real_solutions_pass_through_the_same_harness(audit):
    assert set(audit["control"]) == set(grading.exercise_names())
    failing = {name: status for name, status in audit["control"].items() if status != "pass"}
    assert not failing, f"the instructor's solutions do not pass the audit's harness: {failing}"


def test_no_shipped_callable_passes_an_exercise(audit):
    for name, label in audit["passes"]:
        print(f"LEAK: {label} passes {name}")
    assert not audit["passes"], "shipped code computes exercises without the student's function: " + \
        "; ".join(f"{label} passes {name}" for name, label in audit["passes"])


def test_no_solution_region_calls_the_engine():
    """The engine's other half of the rule: a lesson module calls it outside the marked solution
    regions, so that a stripped exercise keeps nothing of it (the student's code is the answer)."""
    import importlib
    import re

    from cs_utils.instructor.release import instructor_only, marked_regions

    engine = ROOT / "cs_utils" / "engine"
    names = {"engine"}
    for path in engine.glob("*.py"):
        if path.stem != "__init__":
            names |= set(importlib.import_module(f"cs_utils.engine.{path.stem}").__all__)
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    found = []
    for path in sorted((ROOT / "cs_utils").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if instructor_only(rel) or engine in path.parents:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for region in marked_regions(lines, str(rel)):
            found += [f"{rel}:{i + 1}: {lines[i].strip()}" for i in range(region.begin, region.end + 1)
                      if pattern.search(lines[i])]
    assert len(names) > 8 and not found, "\n".join(found)
