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
import zipfile
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
from .results import BadResult
from .sandbox import PACKAGE_ROOT, PROJECT_ROOT, Sandbox, SandboxError, build_base, isolation_mode

__all__ = [
    "DEFAULT_HIDDEN",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT",
    "Cases",
    "IntegrityError",
    "SubmissionError",
    "draw_seed",
    "grader_digest",
    "find_package",
    "grade",
    "open_submission",
    "points_for",
    "prepare_cases",
    "protect",
    "sandbox_base",
    "zero_report",
]

DEFAULT_TIMEOUT = 30.0
DEFAULT_TOTAL_TIMEOUT = 90.0
DEFAULT_MEMORY_MB = 2048
DEFAULT_HIDDEN = 2
MAX_FILE_BYTES = 2 * 2**20
MAX_SUBMISSION_BYTES = 32 * 2**20


class SubmissionError(ValueError):
    """A submission that cannot be opened: the reason is its message."""


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


# --------------------------------------------------------------------------- opening a submission


def find_package(submission: Path) -> Path:
    """The submission's package folder: ``SUBMISSION/cs_utils`` if there is one, else ``SUBMISSION``."""
    submission = Path(submission)
    if not submission.is_dir():
        raise FileNotFoundError(f"{submission} is not a folder; give a student's cs_utils folder or project")
    if (submission / grading.PACKAGE).is_dir():
        return submission / grading.PACKAGE
    if any(submission.glob("*.py")):
        return submission
    raise FileNotFoundError(
        f"{submission} holds neither a {grading.PACKAGE}/ folder nor .py files; give a "
        "student's cs_utils folder or the project folder that contains it"
    )


def _safe_name(name: str) -> bool:
    return name.isidentifier() and len(name) < 64


def _from_zip(path: Path, out: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"not a readable zip file ({one_line(exc, 80)})") from None
    with zf:
        chosen = {}
        for info in zf.infolist():
            parts = info.filename.replace("\\", "/").split("/")
            if (
                info.is_dir()
                or ".." in parts
                or info.filename.startswith("/")
                or not parts[-1].endswith(".py")
            ):
                continue
            if len(parts) >= 2 and parts[-2] == grading.PACKAGE:
                depth = len(parts)
            elif len(parts) == 1:
                depth = 10**6  # loose .py files count only without a cs_utils/ folder
            else:
                continue
            stem = parts[-1][:-3]
            if _safe_name(stem) and (stem not in chosen or depth < chosen[stem][0]):
                chosen[stem] = (depth, info)
        total = 0
        for stem, (_, info) in sorted(chosen.items()):
            with zf.open(info) as member:
                data = member.read(MAX_FILE_BYTES + 1)
            total += len(data)
            if len(data) > MAX_FILE_BYTES or total > MAX_SUBMISSION_BYTES:
                raise SubmissionError(
                    f"{info.filename[:80]} is larger than {MAX_FILE_BYTES // 2**20} MB "
                    "unpacked (or the zip is too large)"
                )
            (out / f"{stem}.py").write_bytes(data)


def _from_folder(path: Path, out: Path) -> None:
    try:
        package = find_package(path)
    except FileNotFoundError as exc:
        raise SubmissionError(str(exc)) from None
    total = 0
    for src in sorted(package.glob("*.py")):
        if src.is_symlink() or not src.is_file() or not _safe_name(src.stem):
            continue
        size = src.stat().st_size
        total += size
        if size > MAX_FILE_BYTES or total > MAX_SUBMISSION_BYTES:
            raise SubmissionError(f"{src.name} is larger than {MAX_FILE_BYTES // 2**20} MB")
        shutil.copyfile(src, out / src.name)


def open_submission(submission: Path, out: Path) -> Path:
    """Copy the submission's ``cs_utils/*.py`` (regular files only) into the new folder ``out``;
    return it. Raises :class:`SubmissionError` with the reason when there is nothing to grade."""
    submission, out = Path(submission), Path(out)
    out.mkdir(parents=True, exist_ok=False)
    if submission.is_file() and submission.suffix == ".zip":
        _from_zip(submission, out)
    elif submission.is_dir():
        _from_folder(submission, out)
    else:
        raise SubmissionError(f"{submission.name} is neither a folder nor a .zip file")
    if not any(out.glob("*.py")):
        raise SubmissionError(f"no {grading.PACKAGE}/*.py files in the submission")
    return out


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


# --------------------------------------------------------------------------- judging


def points_for(max_points: float, public_passed: bool, hidden_passed: int, n_hidden: int) -> float:
    """Each case an equal share; without a passing hidden case, nothing (stored answers earn nothing)."""
    if n_hidden == 0:
        return float(max_points) if public_passed else 0.0
    if hidden_passed == 0:
        return 0.0
    return round(max_points * (hidden_passed + public_passed) / (n_hidden + 1), 2)


def _ended_without_result(how: str, timeout: float, log: str) -> tuple[str, str]:
    if how == "timeout":
        return "timeout", (
            f"no result within the time limit of {timeout:g} s (an endless loop, or far too "
            "slow: vectorise the code)"
        )
    if how == "disk":
        return (
            "crashed",
            "the process wrote over 512 MB, 2000 files or 32 nested folders into its scratch folder "
            "(or over 64 MB into /tmp or /dev/shm) and was stopped",
        )
    if how == "memory":
        return "memory", f"killed by the memory limit{': ' + log if log else ''}"
    if how == "total time":
        return "timeout", "not run: the submission's total time limit was used up by earlier exercises"
    if how == "forkbomb":
        return "crashed", "the process started too many processes at once and was stopped"
    if how == "sandbox died":
        return "crashed", "the sandbox ended before the result (the submission stopped it)"
    what = f"killed by signal {how[6:]}" if how.startswith("signal") else f"exit code {how}"
    return "crashed", f"the process ended without a result ({what})" + (f": {log}" if log else "")


def _judge_case(
    exercise, sandbox: Sandbox, cases: Cases, case: int, how: str, timeout: float, memory_mb: int
) -> dict:
    name = exercise.name
    try:
        got = sandbox.read_result(name, case)
    except BadResult as exc:
        if getattr(exc, "exists", False):
            return {
                "status": "invalid",
                "rel_error": None,
                "message": f"unusable result: {exc}",
                "seconds": 0.0,
            }
        status, message = _ended_without_result(how, timeout, sandbox.log_tail(name))
        return {"status": status, "rel_error": None, "message": message, "seconds": 0.0}
    if got.status != "ok":
        message = got.message
        if got.status == "memory":
            message = f"memory limit of {memory_mb} MB exceeded: {message}"
        return {"status": got.status, "rel_error": None, "message": message, "seconds": got.seconds}
    try:
        result = grading.compare(
            exercise,
            got.outputs,
            cases.expected(name, case),
            cases.mistakes[name] if case == 0 else None,
            got.seconds,
        )
    except Exception as exc:  # noqa: BLE001 - a result the comparison cannot take is not a pass
        return {
            "status": "invalid",
            "rel_error": None,
            "seconds": got.seconds,
            "message": f"unusable result: {type(exc).__name__}: {exc}",
        }
    rel = result.rel_error if result.rel_error is not None and np.isfinite(result.rel_error) else None
    return {"status": result.status, "rel_error": rel, "message": result.message, "seconds": got.seconds}


def _exercise_score(exercise, public: dict, hidden: list[dict], seconds: float) -> dict:
    cases = [public, *hidden]
    n_pass = sum(c["status"] == "pass" for c in hidden)
    points = points_for(exercise.points, public["status"] == "pass", n_pass, len(hidden))
    if all(c["status"] == "pass" for c in cases):
        status, message = "pass", ""
    else:
        labels = ["public case"] + [f"hidden case {i}" for i in range(1, len(hidden) + 1)]
        first = next((label, c) for label, c in zip(labels, cases) if c["status"] != "pass")
        status = "partial" if points > 0 else first[1]["status"]
        message = f"{first[0]}: {first[1]['message']}" if first[1]["message"] else first[0]
    errors = [c["rel_error"] for c in cases if c["rel_error"] is not None]
    clean = [{k: (one_line(v, 300) if k == "message" else v) for k, v in c.items()} for c in cases]
    return {
        "name": exercise.name,
        "module": exercise.path,
        "function": exercise.function,
        "points": points,
        "max_points": exercise.points,
        "status": status,
        "rel_error": max(errors) if errors else None,
        "message": one_line(message, 300),
        "hint": exercise.hint if status != "pass" else "",
        "seconds": round(seconds, 3),
        "public": clean[0],
        "hidden": clean[1:],
    }


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
                    _judge_case(exercise, sandbox, cases, i, how, min(timeout, max(left, 0.0)), memory_mb)
                    for i in range(cases.n_hidden + 1)
                ]
                scores.append(_exercise_score(exercise, judged[0], judged[1:], seconds))
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
