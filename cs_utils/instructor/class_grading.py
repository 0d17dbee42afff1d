"""Grade a whole class: ``python -m cs_utils.instructor.grade --class SUBMISSIONS_DIR --out grades/``.

Every entry of ``SUBMISSIONS_DIR`` is one student's submission, named by the student id: a folder
(the project or its ``cs_utils/``) or ``<id>.zip``. The hidden cases are drawn from one fresh seed
for the class (kept in ``OUT/settings.json``, so a resumed run draws the same; ``--seed`` sets it)
and their expected outputs computed once (cached in ``OUT/.cache``); then the submissions are graded
in parallel (``--jobs``, default one more than the cores: a submission waiting on a time limit uses
no CPU, and each sandbox holds at most one CPU), each in its own sandbox as its own sandbox
account, with a progress bar. ``SUBMISSIONS_DIR`` and ``OUT`` are made root-only first (as root): no
submission reads another, the cache or a report. If the grader's files change while a submission
runs, the class run stops (:class:`~cs_utils.instructor.autograder.IntegrityError`).

Written into ``OUT``:

* ``reports/<id>.json``: each student's full report, written as soon as it is graded. A run that
  stops halfway loses nothing: the next run with the same settings grades only the rest;
* ``feedback/<id>.md``: what the student gets (each exercise, status, relative error, hint);
* ``grades.csv``: one row per student, nbgrader's ``grades.csv`` columns first (``assignment,
  duedate, timestamp, student_id, last_name, first_name, email, raw_score, late_submission_penalty,
  score, max_score``), then the points of each exercise, of each written question (blank until a TA
  scored it) and their sum ``written_points``, ``notes`` (the statuses that cost points, or why the
  submission could not be opened: such a submission gets a row with zero points) and ``seed``.
  ``raw_score`` and ``score`` add the exercises' and the scored questions' points, ``max_score``
  counts every exercise and question. A text cell that a spreadsheet would run as a formula (it
  starts with ``= + - @``, a tab or a carriage return) is written with a leading ``'``;
* the written questions (:mod:`cs_utils.instructor.written`): ``written/<question>.html``, one
  page per question with the rubric and every student's answer, and ``written_scores.csv``
  (``student, question, points, comment``) for the TAs to fill. Every run adds the rows it lacks,
  keeps the filled ones, and merges their points into ``grades.csv`` and the feedback; the rows it
  cannot merge (unknown student or question, points out of range, ...) are printed and listed in
  ``written_problems.txt``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..course import grading
from ..course.questions import QUESTIONS
from ..course.report import feedback_markdown, one_line
from .autograder import (
    DEFAULT_HIDDEN,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    IntegrityError,
    draw_seed,
    grade,
    prepare_cases,
    protect,
    sandbox_base,
    zero_report,
)
from .isolation import IsolationError
from .sandbox import isolation_mode
from .written import (
    read_scores,
    student_written,
    submission_answers,
    update_scores_sheet,
    write_atomic,
    write_question_pages,
)

__all__ = ["NBGRADER_COLUMNS", "discover", "grade_class", "grade_written", "safe_cell", "write_grades_csv"]

NBGRADER_COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
]
ASSIGNMENT = "visualizing_cnns"


def discover(class_dir: Path) -> list[tuple[str, Path]]:
    """``(student id, path)`` for every submission in ``class_dir`` (hidden files skipped), sorted."""
    found = []
    for path in sorted(Path(class_dir).iterdir()):
        if path.name.startswith("."):
            continue
        student = path.stem if path.is_file() and path.suffix == ".zip" else path.name
        found.append((student, path))
    return found


def _settings(names, seed, hidden) -> dict:
    return {"names": list(names), "seed": int(seed), "hidden": int(hidden)}


def _finished(path: Path, settings: dict) -> dict | None:
    """The stored report if it was graded with the same settings (else None: grade it again)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if report.get("settings") != settings or report.get("infrastructure_error"):
        return None
    return report


def safe_cell(value):
    """``value`` for a CSV cell: a text that a spreadsheet would take for a formula gets a ``'``."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _notes(report: dict) -> str:
    if report.get("problem"):
        return one_line(report["problem"])
    lost = [f"{s['name']}: {s['status']}" for s in report["exercises"] if s["status"] != "pass"]
    return "; ".join(lost)


def write_grades_csv(path: Path, rows: list[tuple[str, dict, str]], names: list[str],
                     written: dict[str, dict[str, dict]] | None = None) -> None:
    """``rows``: ``(student id, report, timestamp)``. nbgrader's columns, then one per exercise, one
    per written question and their sum, notes, seed. ``written``: ``student: {question: {"points",
    "comment"}}``, the TAs' merged scores (a question without a row stays blank)."""
    written = written or {}
    questions = list(QUESTIONS)
    top = sum(q.points for q in QUESTIONS.values())
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(NBGRADER_COLUMNS + names + questions + ["written_points", "notes", "seed"])
        for student, report, stamp in rows:
            points = {s["name"]: s["points"] for s in report["exercises"]}
            scored = {q: w["points"] for q, w in written.get(student, {}).items()}
            total = report["points"] + sum(scored.values())
            writer.writerow([safe_cell(cell) for cell in
                [
                    ASSIGNMENT,
                    "",
                    stamp,
                    student,
                    "",
                    "",
                    "",
                    total,
                    0.0,
                    total,
                    report["max_points"] + top,
                ]
                + [points.get(n, 0.0) for n in names]
                + [scored.get(q, "") for q in questions]
                + [sum(scored.values()), _notes(report), report.get("seed")]
            ])


def _timestamp(path: Path) -> str:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(sep=" ")
    except OSError:
        return ""


def _class_seed(out: Path, seed: int | None) -> int:
    """``seed``, else the one this class folder was graded with, else a fresh one (stored)."""
    path = out / "settings.json"
    if seed is None:
        try:
            seed = int(json.loads(path.read_text())["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            seed = draw_seed()
    write_atomic(path, json.dumps({"seed": int(seed)}) + "\n")
    return int(seed)


def grade_class(
    class_dir: Path,
    out: Path,
    *,
    names=None,
    seed: int | None = None,
    hidden: int = DEFAULT_HIDDEN,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    jobs: int | None = None,
    mode: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> list[dict]:
    """Grade every submission of ``class_dir`` into ``out`` (see the module's doc); return the reports
    in the order of the student ids. ``stop_after``: stop once that many were graded in this run
    (as an interrupted run would)."""
    names = list(names) if names else grading.exercise_names()
    out = Path(out).resolve()
    class_dir = Path(class_dir).resolve()
    if out == class_dir or class_dir in out.parents:
        raise ValueError(f"--out {out} must not lie inside the class folder {class_dir}")
    for sub in ("reports", "feedback", ".cache"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    private = [class_dir, out]
    protect(private)
    seed = _class_seed(out, seed)
    settings = _settings(names, seed, hidden)
    mode = mode or isolation_mode()[0]
    students = discover(class_dir)
    done = {s: r for s, _ in students if (r := _finished(out / "reports" / f"{s}.json", settings))}
    todo = [(s, p) for s, p in students if s not in done]
    if stop_after is not None:
        todo = todo[:stop_after]
    if todo:
        sandbox_base()  # built once, before the threads start
        workers = max(1, jobs or (os.cpu_count() or 1) + 1)
        inputs = Path(tempfile.mkdtemp(prefix="grade-inputs-"))  # the cases' inputs: every sandbox reads them
        os.chmod(inputs, 0o755)
        cases = prepare_cases(names, seed, hidden, inputs / "jobs", cache=out / ".cache" / "reference")
        def one(item):
            student, path = item
            try:
                report = grade(path, names, seed=seed, hidden=hidden, timeout=timeout,
                               total_timeout=total_timeout, memory_mb=memory_mb, mode=mode, cases=cases,
                               private=private)
            except (IntegrityError, IsolationError):
                raise  # the grader itself is in question: stop the class, loudly
            except Exception as exc:  # noqa: BLE001 - one submission never stops the class (a rerun retries)
                reason = f"the grader failed: {type(exc).__name__}: {exc}"
                report = zero_report(path, reason, names, mode, seed)
                report["infrastructure_error"] = True
            report["student"], report["settings"] = student, settings
            write_atomic(out / "reports" / f"{student}.json", json.dumps(report, indent=1) + "\n")
            return student, report

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=len(students),
                initial=len(students) - len(todo),
                unit="submission",
                desc=f"grading ({mode})",
            )
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                for student, report in pool.map(one, todo):
                    done[student] = report
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            cases.close()
            shutil.rmtree(inputs, ignore_errors=True)
    graded = [(s, p) for s, p in students if s in done]
    scores = grade_written(graded, out, progress=progress)
    for student, _ in graded:
        feedback = feedback_markdown(done[student], student, student_written(scores.get(student, {})))
        write_atomic(out / "feedback" / f"{student}.md", feedback)
    rows = [(s, done[s], _timestamp(p)) for s, p in graded]
    write_grades_csv(out / "grades.csv", rows, names, scores)
    return [done[s] for s, _ in students if s in done]


def grade_written(students: list[tuple[str, Path]], out: Path, *, progress: bool = True) -> dict:
    """The written questions of a class: the pages ``out/written/<question>.html`` with every
    student's answer, ``out/written_scores.csv`` completed with a row per student and question, and
    its filled rows read back; return ``student: {question: {"points", "comment"}}``. The rows that
    cannot be merged are printed (unless ``progress`` is False) and listed in
    ``out/written_problems.txt`` (removed when there are none)."""
    out = Path(out)
    ids = [s for s, _ in students]
    write_question_pages(out / "written", {s: submission_answers(p) for s, p in students})
    sheet = out / "written_scores.csv"
    try:
        update_scores_sheet(sheet, ids)
        scores, problems = read_scores(sheet, ids)
    except ValueError as exc:  # no header, not UTF-8: the TAs' file is left as it is
        scores, problems = {}, [f"written_scores.csv was not read, nothing of it is merged: {exc}"]
    listed = out / "written_problems.txt"
    if problems:
        text = "".join(f"{p}\n" for p in problems)
        write_atomic(listed, f"{len(problems)} rows of written_scores.csv were not merged:\n{text}")
        if progress:
            print(f"written_scores.csv: {len(problems)} rows not merged (see {listed}):\n{text}", end="")
    else:
        listed.unlink(missing_ok=True)
    return scores
