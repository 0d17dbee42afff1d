"""Autograder: grade a student's submission against the golden checks.

::

    python -m cs_utils.course.grade SUBMISSION [--json scores.json] [--timeout 60] [--memory 2048]

``SUBMISSION`` is a student's ``cs_utils`` folder or the whole student project
(the folder that holds ``cs_utils/``). Each exercise runs in its own process,
one at a time, with a time limit and a memory limit (``RLIMIT_AS``: the address
space the process already has after importing torch, plus ``--memory`` MB). The
submission's modules are imported there under the package name ``submission``
(its ``__init__.py`` is not run), so a module with a syntax error only costs the
exercises that live in it. The golden files, the checking code and every module
other than the one being graded (the foundation: checks, models, images, hooks,
data, runtime; and the other topic modules) are the grader's own, never the
submission's.

A broken submission never stops the grader: a syntax or import error, an
exception, an infinite loop, a huge allocation or a crash of the process each
give zero points for the exercise, with the reason, and the rest is graded.

Output: a table for people on stdout, and with ``--json`` a file for a course
platform::

    {"submission": ..., "points": 9, "max_points": 11, "seconds": 21.4,
     "exercises": [{"name": "gram_matrix", "module": "cs_utils/losses.py",
                    "function": "gram_matrix", "points": 1, "max_points": 1,
                    "status": "pass", "rel_error": 0.0, "message": "", "seconds": 0.41}, ...]}

``status`` is one of pass, fail, not implemented, error, timeout, memory, crashed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import tempfile
import time
import traceback
import types
from dataclasses import asdict, dataclass
from pathlib import Path

from . import grading

__all__ = ["ExerciseScore", "find_package", "grade", "main", "render_table"]

ALIAS = "submission"
#: Modules without exercises that the checks themselves use (the model, images, hooks):
#: taken from the grader, not from the submission, like every module other than the exercise's own.
FOUNDATION = ("checks", "data", "hooks", "image", "models", "runtime")
#: The instructor's tools: never imported on behalf of a submission.
INSTRUCTOR_TOOLS = ("__init__", "__main__", "exercise_registry", "exercises_attribution", "exercises_layers",
                    "exercises_losses", "exercises_pixels", "grade", "grading", "release", "render",
                    "train_weights")
DEFAULT_TIMEOUT = 60.0
DEFAULT_MEMORY_MB = 2048
STARTUP_TIMEOUT = 300.0  # for the process server to import torch once, on a busy machine


@dataclass
class ExerciseScore:
    name: str
    module: str
    function: str
    points: int
    max_points: int
    status: str
    rel_error: float | None
    message: str
    seconds: float


def find_package(submission: Path) -> Path:
    """The submission's package folder: ``SUBMISSION/cs_utils`` if there is one, else ``SUBMISSION``."""
    submission = Path(submission).resolve()
    if not submission.is_dir():
        raise FileNotFoundError(f"{submission} is not a folder; give a student's cs_utils folder or project")
    if (submission / grading.PACKAGE).is_dir():
        return submission / grading.PACKAGE
    if any(submission.glob("*.py")):
        return submission
    raise FileNotFoundError(f"{submission} holds neither a {grading.PACKAGE}/ folder nor .py files; give a "
                            "student's cs_utils folder or the project folder that contains it")


def _virtual_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _limit_memory(extra_bytes: int) -> None:
    import resource

    base = _virtual_memory_bytes() or 0
    limit = base + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _import_submission_module(package_dir: str, module: str):
    """Import ``<package_dir>/<module>.py`` as ``submission.<module>`` without running ``__init__.py``.

    Every other module it imports (``from .losses import ...``) is the grader's own: the
    model the checks build and the submission's code then share their classes (e.g.
    ``Conv2dSame``), and a broken file of the submission costs only the exercises that
    live in it, never those of a module that imports it."""
    if ALIAS not in sys.modules:
        package = types.ModuleType(ALIAS)
        package.__path__ = [package_dir]
        package.__package__ = ALIAS
        package.__file__ = None
        sys.modules[ALIAS] = package
        for name in _grader_modules():
            if name != module:
                sys.modules[f"{ALIAS}.{name}"] = importlib.import_module(f"{grading.PACKAGE}.{name}")
    return importlib.import_module(f"{ALIAS}.{module}")


def _grader_modules() -> list[str]:
    """The grader's own modules that a submission's module may import: :data:`FOUNDATION` and
    every topic module (the instructor's tools are left out)."""
    here = Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in INSTRUCTOR_TOOLS)


def _describe_import_error(exc: BaseException, exercise: grading.Exercise) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == f"{ALIAS}.{exercise.module}":
        return f"{exercise.path} is missing from the submission"
    if isinstance(exc, SyntaxError):
        where = f"{Path(exc.filename or '?').name} line {exc.lineno}"
        return f"cannot import {exercise.path}: SyntaxError in {where}: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith("<frozen")]
    where = f" ({Path(own[-1].filename).name} line {own[-1].lineno})" if own else ""
    return f"cannot import {exercise.path}: {type(exc).__name__}: {exc}{where}"


def _child(conn, package_dir: str, name: str, memory_bytes: int, log_path: str) -> None:
    """Runs in the grading process of one exercise: import, check, send the result back."""
    conn.send("started")  # the time limit counts from here, not from the start of the process server
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    exercise = grading.get_exercise(name)
    try:
        if memory_bytes:
            _limit_memory(memory_bytes)
        try:
            module = _import_submission_module(package_dir, exercise.module)
        except BaseException as exc:  # noqa: BLE001 - the submission's failure is the result
            conn.send({"status": "error", "rel_error": None, "message": _describe_import_error(exc, exercise),
                       "seconds": 0.0})
            return
        fn = getattr(module, exercise.function, None)
        if not callable(fn):
            conn.send({"status": "error", "rel_error": None, "seconds": 0.0,
                       "message": f"{exercise.path} has no function {exercise.function}"})
            return
        result = grading.evaluate(name, fn)
        conn.send({"status": result.status, "rel_error": result.rel_error, "message": result.message,
                   "seconds": result.seconds})
    except MemoryError:
        conn.send({"status": "memory", "rel_error": None, "seconds": 0.0,
                   "message": f"memory limit of {memory_bytes // 2**20} MB exceeded"})
    except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit from the submission
        conn.send({"status": "error", "rel_error": None, "seconds": 0.0,
                   "message": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _log_tail(path: str, lines: int = 3) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _is_memory_error(message: str) -> bool:
    return message.startswith("MemoryError") or "can't allocate memory" in message or \
        "DefaultCPUAllocator" in message


def _wait(receiver, process, timeout: float) -> str:
    """"message" once ``receiver`` has one, "ended" if the process ended without one, else "timeout"."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        ready = multiprocessing.connection.wait([receiver, process.sentinel], left)
        if receiver in ready:
            return "message"
        if process.sentinel in ready:
            return "message" if receiver.poll(0) else "ended"


def grade_exercise(package_dir: Path, name: str, *, timeout: float = DEFAULT_TIMEOUT,
                   memory_mb: int = DEFAULT_MEMORY_MB, mp_context=None) -> ExerciseScore:
    """Grade one exercise of the submission in a fresh process with time and memory limits."""
    exercise = grading.get_exercise(name)
    ctx = mp_context or _context()
    receiver, sender = ctx.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        log_path = os.path.join(tmp, "output.log")
        args = (sender, str(package_dir), name, memory_mb * 2**20, log_path)
        process = ctx.Process(target=_child, args=args, daemon=True)
        process.start()
        sender.close()
        result = None
        start = time.perf_counter()
        try:
            state = _wait(receiver, process, STARTUP_TIMEOUT)
            if state == "message":
                receiver.recv()  # "started"
                start = time.perf_counter()
                state = _wait(receiver, process, timeout)
                if state == "message":
                    result = receiver.recv()
        except (EOFError, OSError):
            state = "ended"
        elapsed = time.perf_counter() - start
        if result is None and state == "timeout":
            process.kill()
            process.join()
            result = {"status": "timeout", "rel_error": None, "seconds": elapsed,
                      "message": f"no result within the time limit of {timeout:g} s (an endless loop, "
                                 "or far too slow: vectorise the code)"}
        else:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        if result is None:
            code = process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            tail = _log_tail(log_path)
            message = f"the process ended without a result ({how})" + (f": {tail}" if tail else "")
            result = {"status": "crashed", "rel_error": None, "seconds": elapsed, "message": message}
        receiver.close()
    if result["status"] == "error" and _is_memory_error(result["message"]):
        result["status"] = "memory"
        result["message"] = f"memory limit of {memory_mb} MB exceeded: {result['message']}"
    rel = result["rel_error"]
    if rel is not None and not math.isfinite(rel):
        rel = None
    passed = result["status"] == "pass"
    return ExerciseScore(name=name, module=exercise.path, function=exercise.function,
                         points=exercise.points if passed else 0, max_points=exercise.points,
                         status=result["status"], rel_error=rel, message=result["message"],
                         seconds=round(float(result["seconds"] or elapsed), 3))


# The grading processes run ``python -m cs_utils.course.grade``'s main module again as ``__mp_main__``;
# runpy then warns that the module is imported already. Harmless here, so the server ignores it.
_RERUN_WARNING = "ignore:'cs_utils.course.grade' found in sys.modules:RuntimeWarning"


def _context():
    if _RERUN_WARNING not in sys.warnoptions:
        sys.warnoptions.append(_RERUN_WARNING)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cs_utils.course.grade"])
    return ctx


def grade(submission: Path, names=None, *, timeout: float = DEFAULT_TIMEOUT,
          memory_mb: int = DEFAULT_MEMORY_MB, progress=None) -> dict:
    """Grade every exercise (or ``names``) of ``submission``, one process at a time; return the report."""
    package_dir = find_package(submission)
    names = list(names) if names else grading.exercise_names()
    for name in names:
        grading.get_exercise(name)  # a clear error for an unknown name, before any work
    ctx = _context()
    start = time.perf_counter()
    scores = []
    for name in names:
        score = grade_exercise(package_dir, name, timeout=timeout, memory_mb=memory_mb, mp_context=ctx)
        scores.append(score)
        if progress:
            progress(score)
    return {
        "submission": str(Path(submission).resolve()),
        "package": str(package_dir),
        "points": sum(s.points for s in scores),
        "max_points": sum(s.max_points for s in scores),
        "seconds": round(time.perf_counter() - start, 2),
        "exercises": [asdict(s) for s in scores],
    }


def _row(score: dict) -> str:
    rel = f"{score['rel_error']:.1e}" if score["rel_error"] is not None else "-"
    points = f"{score['points']}/{score['max_points']}"
    return (f"{score['name']:26s} {points:>6s}  {score['status']:15s} {rel:>9s} {score['seconds']:7.2f}  "
            f"{score['message']}").rstrip()


def render_table(report: dict) -> str:
    header = f"{'exercise':26s} {'points':>6s}  {'status':15s} {'rel.error':>9s} {'seconds':>7s}  message"
    lines = [f"submission: {report['package']}", header, "-" * len(header)]
    lines += [_row(s) for s in report["exercises"]]
    lines += ["-" * len(header), f"total: {report['points']}/{report['max_points']} points "
              f"({len(report['exercises'])} exercises, {report['seconds']:.1f} s)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs_utils.course.grade",
                                     description="Grade a student's cs_utils against the golden checks.")
    parser.add_argument("submission", type=Path, help="a student's cs_utils folder or project folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per exercise (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB,
                        help="MB of memory per exercise beyond what the process holds at its start "
                             f"(default {DEFAULT_MEMORY_MB})")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="grade only these exercises")
    args = parser.parse_args(argv)
    try:
        report = grade(args.submission, args.only, timeout=args.timeout, memory_mb=args.memory)
    except (FileNotFoundError, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(render_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
