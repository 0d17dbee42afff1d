"""The autograder: grade one submission in a sandbox, on public and hidden cases.

The command line is :mod:`cs_utils.instructor.grade`; a whole class is
:mod:`cs_utils.instructor.class_grading`.
``SUBMISSION`` is a student's ``cs_utils`` folder, the project folder holding it, or a ``.zip`` of
either (``make submit`` writes one with ``cs_utils/<exercise modules>.py``). Only its ``.py`` files
are used, copied out first (no links, size-limited).

Each submission runs in a sandbox (:mod:`cs_utils.instructor.sandbox`: bubblewrap when installed,
else a weaker fallback; the report says which) that holds the student release of ``cs_utils``,
the submission's files and the inputs, never the grader, its solutions or its expected outputs.
Every exercise runs in its own fresh process there, with a time and a memory limit, on:

* the **public case**: the inputs of the notebook's check cell (``data/checks``), whose stored
  typical mistakes let the feedback name the mistake;
* **hidden cases** (``--hidden``, default 2): inputs drawn at grading time from a fresh random seed
  (recorded in the report; ``--seed`` repeats a run), the expected outputs computed here by the
  reference implementation (:mod:`~cs_utils.instructor.hidden_cases`).

Before a submission runs, what the grader keeps is made root-only and checked as the sandbox
account (:func:`protect`); the grader hashes its own files, the reference and the sandbox's copy
before and after each submission and stops with :class:`IntegrityError` if anything changed. Each
exercise has a time limit, the whole submission a total one (``total_timeout``).

Points: each case is an equal share of the exercise's points; the public case counts once a hidden
case passes (a stored answer earns nothing). Whatever the submission does, each exercise ends with a
status (pass, partial, fail, not implemented, error, timeout, memory, crashed, invalid) and the
table and the JSON are written. The JSON layout is in :mod:`cs_utils.course.report`.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..course import grading
from ..course.exercise_registry import Context
from ..course.report import one_line
from .hidden_cases import hidden_inputs, reference_outputs
from .isolation import (
    IsolationError,
    accessible_to,
    account_slot,
    is_root,
    lock_project,
    make_private,
    sandbox_account,
)
from .judging import exercise_score, judge_case
from .sandbox import Sandbox, SandboxError, isolation_mode
from .sandbox_files import PACKAGE_ROOT, PROJECT_ROOT, build_base
from .submission import SubmissionError, open_submission

__all__ = [
    "DEFAULT_HIDDEN",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT",
    "Cases",
    "IntegrityError",
    "draw_seed",
    "grader_digest",
    "grade",
    "prepare_cases",
    "protect",
    "sandbox_base",
    "zero_report",
]

DEFAULT_TIMEOUT = 30.0
DEFAULT_TOTAL_TIMEOUT = 90.0
DEFAULT_MEMORY_MB = 2048
DEFAULT_HIDDEN = 2


class IntegrityError(RuntimeError):
    """The grader's files, its reference or the sandbox's copy changed while a submission ran."""


def draw_seed() -> int:
    """A fresh seed for the hidden cases (recorded in every report: ``--seed`` repeats a run)."""
    return secrets.randbelow(2**31)


def _readable_tree(folder: Path, dir_mode: int = 0o755, file_mode: int = 0o644, gid=None) -> None:
    for path, _, files in os.walk(folder):
        os.chmod(path, dir_mode)
        if gid is not None:
            os.chown(path, 0, gid)
        for name in files:
            os.chmod(os.path.join(path, name), file_mode)
            if gid is not None:
                os.chown(os.path.join(path, name), 0, gid)


def grader_digest(extra=()) -> str:
    """One SHA-256 over the grader's own files (its ``cs_utils`` and ``data/``, the reference
    included) and the folders in ``extra`` (the sandbox's copy, the cache of expected outputs)."""
    digest = hashlib.sha256()
    for top in (PACKAGE_ROOT, PROJECT_ROOT / "data", *extra):
        top = Path(top)
        if not top.exists():
            continue
        for path in sorted(p for p in top.rglob("*") if "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(top)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode())
            elif path.is_file():
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
            info = path.lstat()
            digest.update(f"{info.st_mode:o}:{info.st_uid}".encode())
    return digest.hexdigest()


def protect(private=(), slot: int = 0) -> list[str]:
    """As root: make the grader's project and the folders in ``private`` (reports, cache, class
    folder, results) root-only, then check as the sandbox account that it can neither read, write
    nor enter any of them (nor the grader's package and golden files); raises :class:`IsolationError`
    naming what it could reach. Returns the paths checked."""
    if not is_root():
        return []
    lock_project(PROJECT_ROOT, keep=[Path(sys.prefix), Path(sys.exec_prefix)])
    for path in private:
        make_private(Path(path))
    checked = [PACKAGE_ROOT, PACKAGE_ROOT / "losses.py", PROJECT_ROOT / "data" / "checks",
               *map(Path, private)]
    checked = [p for p in checked if p.exists()]
    reachable = accessible_to(sandbox_account(slot), checked)
    if reachable:
        raise IsolationError(
            f"the sandbox account can reach {', '.join(reachable)}: make them root-only (chmod 700) "
            "before grading"
        )
    return [str(p) for p in checked]


def _share_with(package: Path, slot: int) -> None:
    """The submission's copy readable by its sandbox account's group only (root owns it)."""
    account = sandbox_account(slot)
    if account is not None:
        _readable_tree(package, 0o750, 0o640, gid=account.gid)


# --------------------------------------------------------------------------- the cases


class Cases:
    """The cases of the exercises for one seed: inputs written to ``jobs`` (one folder per exercise,
    ``case_0.npz`` the public one), expected outputs computed by the reference (in a thread)."""

    def __init__(self, names: list[str], seed: int, n_hidden: int, jobs: Path, cache: Path | None = None):
        self.names, self.seed, self.n_hidden, self.jobs = list(names), int(seed), int(n_hidden), Path(jobs)
        self.public, self.mistakes, self.hidden = {}, {}, {}
        ctx = Context()
        for name in self.names:
            inputs, outputs, mistakes = grading.load_golden(name)
            self.public[name], self.mistakes[name] = outputs, mistakes
            cases = [inputs] + [hidden_inputs(name, seed, i, ctx) for i in range(1, self.n_hidden + 1)]
            self.hidden[name] = cases[1:]
            folder = self.jobs / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, case in enumerate(cases):
                grading.write_npz(folder / f"case_{i}.npz", case)
        _readable_tree(self.jobs)  # the inputs: every sandbox reads them
        self.cache = Path(cache) if cache else None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._expected = {name: self._pool.submit(self._reference, name) for name in self.names}

    def _reference(self, name: str) -> list[dict]:
        cached = self._load_cache(name)
        if cached is not None:
            return cached
        ctx = Context()
        outputs = [reference_outputs(name, inputs, ctx) for inputs in self.hidden[name]]
        if self.cache:
            self.cache.mkdir(parents=True, exist_ok=True)
            arrays = {
                f"case_{i}/inputs/{k}": v for i, c in enumerate(self.hidden[name], 1) for k, v in c.items()
            }
            arrays.update(
                {f"case_{i}/outputs/{k}": v for i, c in enumerate(outputs, 1) for k, v in c.items()}
            )
            grading.write_npz(self.cache / f"{name}-seed{self.seed}.npz", arrays)
        return outputs

    def _load_cache(self, name: str) -> list[dict] | None:
        path = self.cache / f"{name}-seed{self.seed}.npz" if self.cache else None
        if path is None or not path.exists():
            return None
        with np.load(path, allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        outputs = []
        for i, inputs in enumerate(self.hidden[name], 1):
            same = all(np.array_equal(stored.get(f"case_{i}/inputs/{k}"), v) for k, v in inputs.items())
            if not same:
                return None  # drawn differently (other code): compute again
            prefix = f"case_{i}/outputs/"
            outputs.append({k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)})
        return outputs

    def expected(self, name: str, case: int) -> dict:
        """The expected outputs of case ``case`` (0: public, from the golden file; else hidden)."""
        return self.public[name] if case == 0 else self._expected[name].result()[case - 1]

    def wait(self) -> None:
        for future in self._expected.values():
            future.result()

    def close(self) -> None:
        """Stop computing what nobody asked for yet (e.g. when no submission could be opened)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def prepare_cases(names, seed: int, n_hidden: int, jobs: Path, cache: Path | None = None) -> Cases:
    for name in names:
        grading.get_exercise(name)  # a clear error for an unknown name, before any work
    return Cases(list(names), seed, n_hidden, jobs, cache)


_BASE: dict[str, Path] = {}
_BASE_LOCK = threading.Lock()


def sandbox_base() -> Path:
    """The sandbox's copy of the student release, built once per process (a class's threads wait
    for the first: building it parses sources with ``ast``, which CPython 3.11 cannot do in two
    threads at once)."""
    with _BASE_LOCK:
        if "base" not in _BASE:
            folder = Path(tempfile.mkdtemp(prefix="grade-base-"))
            atexit.register(shutil.rmtree, folder, True)
            _BASE["base"] = build_base(folder)
        return _BASE["base"]


def zero_report(submission: Path, reason: str, names: list[str], mode: str, seed: int) -> dict:
    """The report of a submission that could not be graded: zero points, ``reason`` as ``problem``."""
    exercises = []
    for name in names:
        exercise = grading.get_exercise(name)
        exercises.append(
            {
                "name": name,
                "module": exercise.path,
                "function": exercise.function,
                "points": 0.0,
                "max_points": exercise.points,
                "status": "error",
                "rel_error": None,
                "message": one_line(reason),
                "hint": "",
                "seconds": 0.0,
                "public": None,
                "hidden": [],
            }
        )
    return {
        "submission": str(submission),
        "mode": mode,
        "seed": seed,
        "points": 0.0,
        "max_points": sum(e["max_points"] for e in exercises),
        "seconds": 0.0,
        "problem": one_line(reason),
        "exercises": exercises,
    }


def grade(
    submission: Path,
    names=None,
    *,
    seed: int | None = None,
    hidden: int = DEFAULT_HIDDEN,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    mode: str | None = None,
    cases: Cases | None = None,
    slot: int | None = None,
    private=(),
    progress=None,
) -> dict:
    """Grade every exercise (or ``names``) of ``submission`` in one sandbox; return the report.
    Never raises for what the submission holds or does: an unusable submission gets a report with
    zero points and ``problem`` set. ``seed`` None draws a fresh one. ``slot``: the sandbox account
    (default: one that no other grader on this machine holds now). ``private``: more folders the
    submission must not reach (checked before it runs). Raises :class:`IntegrityError` if the
    grader's files changed while the submission ran, :class:`IsolationError` if the machine cannot
    isolate it."""
    if slot is None:
        with account_slot() as free:
            return grade(submission, names, seed=seed, hidden=hidden, timeout=timeout,
                         total_timeout=total_timeout, memory_mb=memory_mb, mode=mode, cases=cases,
                         slot=free, private=private, progress=progress)
    start = time.perf_counter()
    names = list(names) if names else grading.exercise_names()
    seed = draw_seed() if seed is None and cases is None else (cases.seed if seed is None else int(seed))
    mode = mode or isolation_mode()[0]
    work = Path(tempfile.mkdtemp(prefix="grade-"))
    os.chmod(work, 0o711)
    own_cases = cases is None
    scores, sandbox = [], None
    try:
        for name in names:
            grading.get_exercise(name)
        protect(private, slot)
        try:
            package = open_submission(submission, work / "submission")
        except SubmissionError as exc:
            return zero_report(submission, str(exc), names, mode, seed)
        _share_with(package, slot)
        jobs = cases.jobs if cases is not None else work / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        base = sandbox_base()

        def new_sandbox():
            box = Sandbox(package, jobs, base, memory_mb=memory_mb, mode=mode, slot=slot)
            box.launch()
            return box

        sandbox = new_sandbox()  # it imports torch while the cases are drawn here
        if own_cases:
            cases = prepare_cases(names, seed, hidden, jobs)
        if cases.cache:  # a class: the cached outputs are written before the submission runs
            cases.wait()
        watched = [base] + ([cases.cache] if cases.cache else [])
        before = grader_digest(watched)
        deadline = time.monotonic() + total_timeout
        try:
            for name in names:
                exercise = grading.get_exercise(name)
                left = deadline - time.monotonic()
                if left <= 1.0:
                    how, seconds = "total time", 0.0
                else:
                    if sandbox.ready and not sandbox.alive:  # stopped after a timeout or killed: a new one
                        sandbox.cleanup()
                        sandbox = new_sandbox()
                    if not sandbox.ready:
                        try:
                            sandbox.wait_ready()
                        except SandboxError as exc:
                            report = zero_report(submission, f"the sandbox failed: {exc}", names, mode, seed)
                            report["exercises"] = scores + report["exercises"][len(scores) :]
                            report["infrastructure_error"] = True  # not the submission's doing: regrade
                            return report
                    how, seconds = sandbox.run(name, min(timeout, left))
                judged = [
                    judge_case(exercise, sandbox, cases, i, how, min(timeout, max(left, 0.0)), memory_mb)
                    for i in range(cases.n_hidden + 1)
                ]
                scores.append(exercise_score(exercise, judged[0], judged[1:], seconds))
                if progress:
                    progress(scores[-1])
        finally:
            sandbox.cleanup()
            if grader_digest(watched) != before:
                raise IntegrityError(
                    f"the grader's files, its reference or the sandbox's copy changed while {submission} "
                    "was graded: grading stopped; restore the grader (git status) and regrade"
                )
        return {
            "submission": str(submission),
            "mode": mode,
            "uid": sandbox.uid,
            "account": sandbox.account.name if sandbox.account is not None else None,
            "limits": sandbox.limits,
            "sandbox_cs_utils": sandbox.cs_utils_file if sandbox.ready else None,
            "seed": seed,
            "points": round(sum(s["points"] for s in scores), 2),
            "max_points": sum(s["max_points"] for s in scores),
            "seconds": round(time.perf_counter() - start, 2),
            "exercises": scores,
        }
    finally:
        if sandbox is not None:
            sandbox.cleanup()
        if own_cases and cases is not None:
            cases.close()
        shutil.rmtree(work, ignore_errors=True)
