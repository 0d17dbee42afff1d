"""Autograder command line: one submission, or a whole class.

::

    python -m cs_utils.instructor.grade SUBMISSION [--json scores.json] [--seed N] [--hidden 2]
    python -m cs_utils.instructor.grade --class SUBMISSIONS_DIR --out grades/ [--jobs 2]

``SUBMISSION`` is a student's ``cs_utils`` folder, the project folder holding it, or a ``.zip`` of
either. How a submission is graded (sandbox, public and hidden cases, points) is in
:mod:`cs_utils.instructor.autograder`; a class run (``grades.csv``, feedback, resuming) in
:mod:`cs_utils.instructor.class_grading`. The table goes to stdout, the report to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..course import grading
from ..course.report import render_table
from .autograder import (
    DEFAULT_HIDDEN,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    IntegrityError,
    draw_seed,
    grade,
    zero_report,
)
from .class_grading import grade_class
from .isolation import IsolationError

__all__ = ["main"]


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cs_utils.instructor.grade",
        description="Grade a submission (or a class) on public and hidden cases.",
    )
    parser.add_argument("submission", type=Path, nargs="?", help="a cs_utils folder, project folder or .zip")
    parser.add_argument(
        "--class",
        dest="class_dir",
        type=Path,
        default=None,
        help="grade every submission (folder or .zip named by student id) in this folder",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("grades"), help="with --class: grades.csv and feedback"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="with --class: submissions at once (default: cores + 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--seed", type=int, default=None,
                        help="draws the hidden cases (default: a fresh seed, printed and recorded)")
    parser.add_argument(
        "--hidden", type=int, default=DEFAULT_HIDDEN, help="hidden cases per exercise (default 2)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per exercise, all its cases (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--total-timeout",
        type=float,
        default=DEFAULT_TOTAL_TIMEOUT,
        help=f"seconds for the whole submission (default {DEFAULT_TOTAL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=DEFAULT_MEMORY_MB,
        help=f"MB of memory per exercise beyond the start (default {DEFAULT_MEMORY_MB})",
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="grade only these exercises")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        for name in args.only or ():
            grading.get_exercise(name)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.class_dir is not None:
        if not args.class_dir.is_dir():
            print(f"error: {args.class_dir} is not a folder of submissions", file=sys.stderr)
            return 2
        try:
            reports = grade_class(args.class_dir, args.out, names=args.only, seed=args.seed,
                                  hidden=args.hidden, timeout=args.timeout, total_timeout=args.total_timeout,
                                  memory_mb=args.memory, jobs=args.jobs)
        except (IntegrityError, IsolationError) as exc:
            print(f"GRADING STOPPED: {exc}", file=sys.stderr)
            return 3
        print(f"graded {len(reports)} submissions into {args.out}: grades.csv, feedback/<student>.md; "
              f"written questions: written/index.html (a page per question, with the rubric), scored in "
              f"written_scores.csv, merged by running this command again")
        return 0
    if args.submission is None:
        print("error: give a SUBMISSION or --class SUBMISSIONS_DIR", file=sys.stderr)
        return 2
    if not args.submission.exists():
        print(f"error: {args.submission} does not exist", file=sys.stderr)
        return 2
    names = args.only or grading.exercise_names()
    seed = draw_seed() if args.seed is None else args.seed
    try:
        report = grade(args.submission.resolve(), names, seed=seed, hidden=args.hidden, timeout=args.timeout,
                       total_timeout=args.total_timeout, memory_mb=args.memory)
        status = 0
    except (IntegrityError, IsolationError) as exc:
        print(f"GRADING STOPPED: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - a failure of the grader itself: still a table and a JSON
        report = zero_report(args.submission, f"the grader failed: {type(exc).__name__}: {exc}", names,
                             "none", seed)
        status = 1
    print(render_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
