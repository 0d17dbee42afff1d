"""The student's commands in the release: check every exercise, pack the submission.

::

    python -m cs_utils.course.student check      # make check: every exercise's public case, every question
    python -m cs_utils.course.student submit     # make submit: submission.zip and submission.pdf

Both start with :mod:`cs_utils.course.syntax_check` (``make`` runs it by path first: a syntax
error breaks ``import cs_utils``). ``check`` runs each exercise's public case (the inputs of its
notebook's check cell) with the grader's comparison and hints
(:func:`cs_utils.course.grading.evaluate`), prints the grader's table
(:func:`cs_utils.course.report.render_table`), what remains, and which written questions
(:mod:`cs_utils.course.questions`) have no answer yet in the saved notebooks; it exits non-zero
until every exercise passes and every question is answered. ``submit`` prints the same and writes
``submission.zip`` (the exercise modules ``cs_utils/<module>.py`` and ``notebooks/*.ipynb``,
nothing else; the grader reads it as it is, :func:`cs_utils.instructor.submission.open_submission`)
and ``submission.pdf`` with its question-to-page map ``submission_pages.json``
(:mod:`cs_utils.course.submission_pdf`), for the written questions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zipfile
from pathlib import Path

from . import grading
from .exercise_registry import PACKAGE
from .questions import QUESTIONS, unanswered
from .report import render_table
from .syntax_check import main as syntax_main

__all__ = ["SUBMISSION", "check_report", "exercise_modules", "exercise_notebooks", "main",
           "questions_summary", "remaining_summary", "submission_files", "unexecuted_notebooks",
           "write_submission"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
SUBMISSION = "submission.zip"
_CHECK_CALL = re.compile(r"""(?:check_exercise|grading\.check)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def exercise_modules() -> list[str]:
    """The files the student writes in, relative to the project: ``cs_utils/losses.py``, ..."""
    return sorted({e.path for e in grading.EXERCISES.values()})


def _code_cells(root: Path):
    """``(notebook stem, code)`` of every code cell of ``root/notebooks/*.ipynb``, in order."""
    for path in sorted(Path(root, "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
            if cell.get("cell_type") == "code":
                source = cell.get("source", "")
                yield path.stem, "".join(source) if isinstance(source, list) else source


def exercise_notebooks(root: Path = PROJECT_ROOT) -> dict[str, tuple[str, bool]]:
    """``exercise name: (notebook stem, has a check cell)``: the first notebook with its check cell
    (``cs.check_exercise("name")``), else the first notebook that calls ``cs.<function>(``, else the
    notebook of the first exercise in the same file."""
    checked: dict[str, str] = {}
    called: dict[str, str] = {}
    functions = {e.function: e.name for e in grading.EXERCISES.values()}
    for stem, code in _code_cells(root):
        for name in _CHECK_CALL.findall(code):
            checked.setdefault(name, stem)
        for function in re.findall(r"\bcs\.([A-Za-z_]\w*)\s*\(", code):
            if function in functions:
                called.setdefault(functions[function], stem)
    found = {name: (checked[name], True) if name in checked else (called[name], False)
             for name in grading.EXERCISES if name in checked or name in called}
    for name, exercise in grading.EXERCISES.items():  # else: where the same file's exercises are
        same_file = [found[n][0] for n, e in grading.EXERCISES.items() if e.module == exercise.module
                     and n in found]
        if name not in found and same_file:
            found[name] = (same_file[0], False)
    return {name: found[name] for name in grading.EXERCISES if name in found}


def check_report(names=None, root: Path = PROJECT_ROOT) -> dict:
    """The public case of every exercise (or ``names``), as a report in the grader's layout:
    full points for a pass, none otherwise, no hidden cases."""
    start = time.perf_counter()
    scores = []
    for name in names or grading.exercise_names():
        exercise = grading.get_exercise(name)
        result = grading.evaluate(name)
        case = {"status": result.status, "rel_error": result.rel_error, "message": result.message,
                "seconds": round(result.seconds, 3)}
        scores.append({
            "name": name,
            "module": exercise.path,
            "function": exercise.function,
            "points": float(exercise.points) if result.passed else 0.0,
            "max_points": exercise.points,
            "status": result.status,
            "rel_error": result.rel_error,
            "message": result.message,
            "hint": "" if result.passed else exercise.hint,
            "seconds": round(result.seconds, 3),
            "public": case,
            "hidden": [],
        })
    return {
        "submission": f"{root} (public cases only; the grader adds hidden cases)",
        "points": sum(s["points"] for s in scores),
        "max_points": sum(s["max_points"] for s in scores),
        "seconds": round(time.perf_counter() - start, 2),
        "exercises": scores,
    }


def remaining_summary(report: dict, notebooks: dict[str, tuple[str, bool]]) -> str:
    """What is left to do, one line per exercise that does not pass yet, or that all pass."""
    left = [s for s in report["exercises"] if s["status"] != "pass"]
    total = len(report["exercises"])
    if not left:
        return f"all {total} exercises pass their public case: run `make submit` and upload {SUBMISSION}"
    lines = [f"{total - len(left)}/{total} exercises pass; still to do ({len(left)}):"]
    for s in left:
        where = f"notebook {notebooks[s['name']][0]}" if s["name"] in notebooks else "no notebook"
        lines.append(f"  {s['function']:26s} in {s['module']:28s} ({where}): {s['status']}")
    lines.append("Write the function, then re-run its check cell (or `make check`); README.md says "
                 "what to do when a check fails.")
    return "\n".join(lines)


def questions_summary(root: Path = PROJECT_ROOT) -> tuple[str, int]:
    """What the saved notebooks answer of the written questions, and how many are unanswered."""
    left = unanswered(Path(root, "notebooks"))
    total = len(QUESTIONS)
    points = sum(q.points for q in QUESTIONS.values())
    if not left:
        return f"all {total} written questions have an answer ({points:g} points, graded by hand)", 0
    lines = [f"{total - len(left)}/{total} written questions answered ({points:g} points, graded by hand); "
             f"still unanswered ({len(left)}):"]
    for q in left:
        lines.append(f"  {q.id:26s} in notebook {q.notebook} ({q.points:g} points): {q.title}")
    lines.append("Write each answer in the cell under its question, replacing the line in italics, and "
                 "save the notebook (Ctrl+S): make check reads the saved file.")
    return "\n".join(lines), len(left)


def unexecuted_notebooks(root: Path = PROJECT_ROOT) -> list[str]:
    """The notebooks with questions whose saved code cells hold no output (their figures would be
    missing from submission.pdf)."""
    found = []
    for stem in sorted({q.notebook for q in QUESTIONS.values()}):
        try:
            cells = json.loads(Path(root, "notebooks", f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        code = [c for c in cells if isinstance(c, dict) and c.get("cell_type") == "code"]
        if code and not any(c.get("outputs") for c in code):
            found.append(stem)
    return found


def submission_files(root: Path = PROJECT_ROOT) -> list[str]:
    """What goes into the zip, relative to ``root``: the exercise modules, then the notebooks."""
    root = Path(root)
    notebooks = sorted(f"notebooks/{p.name}" for p in (root / "notebooks").glob("*.ipynb"))
    return exercise_modules() + notebooks


def write_submission(root: Path = PROJECT_ROOT, out: Path | None = None) -> Path:
    """Write the zip (default ``root/submission.zip``) of :func:`submission_files`; return its path."""
    root = Path(root)
    out = Path(out) if out is not None else root / SUBMISSION
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in submission_files(root):
            zf.write(root / rel, rel)
    tmp.replace(out)
    return out


def _check(root: Path) -> int:
    report = check_report(root=root)
    print(render_table(report))
    print(remaining_summary(report, exercise_notebooks(root)))
    text, left = questions_summary(root)
    print(text)
    return 0 if all(s["status"] == "pass" for s in report["exercises"]) and not left else 1


def _write_pdf(root: Path) -> int:
    from .submission_pdf import PAGE_MAP, SUBMISSION_PDF, ChromiumMissing, write_submission_pdf

    for stem in unexecuted_notebooks(root):
        print(f"note: notebooks/{stem}.ipynb was saved without outputs; its figures will be missing from "
              f"{SUBMISSION_PDF} (run it, save it, then make submit again)")
    print(f"writing {SUBMISSION_PDF} (about 30 s) ...", flush=True)
    try:
        pages = write_submission_pdf(root)
    except ChromiumMissing as exc:
        print(f"error: {SUBMISSION_PDF} was not written: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - say what failed; the zip is already written
        print(f"error: {SUBMISSION_PDF} was not written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {SUBMISSION_PDF}: {pages['pages']} pages in {pages['seconds']:g} s, each written question "
          f"on pages of its own; {PAGE_MAP} maps questions to pages. Upload it where your course collects "
          "the written answers.")
    return 0


def _submit(root: Path) -> int:
    if syntax_main(["submit", "--root", str(root)]):
        return 1
    report = check_report(root=root)
    print(render_table(report))
    print(remaining_summary(report, exercise_notebooks(root)))
    path = write_submission(root)
    with zipfile.ZipFile(path) as zf:
        count = len(zf.namelist())
    print(f"wrote {path.name}: {count} files ({len(exercise_modules())} modules, "
          f"{count - len(exercise_modules())} notebooks), {path.stat().st_size / 1024:.0f} KiB; "
          f"upload it as your submission (local check: {report['points']:g}/{report['max_points']:g} "
          "points on the public cases)")
    print(questions_summary(root)[0])
    return _write_pdf(root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs_utils.course.student",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "submit"])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the project (default: this one)")
    args = parser.parse_args(argv)
    if Path(args.root, PACKAGE).resolve() != Path(grading.__file__).resolve().parent.parent:
        print(f"error: {args.root} is not the project of the cs_utils imported here; run it from "
              "the project's folder with `make ...`", file=sys.stderr)
        return 2
    return _check(args.root) if args.command == "check" else _submit(args.root)


if __name__ == "__main__":
    sys.exit(main())
