"""Gradescope: the autograder zip, and what runs in Gradescope's container for each submission.

::

    make gradescope                                       # build/gradescope_autograder.zip
    python -m cs_utils.instructor.gradescope build --out autograder.zip [--seed N]
    python -m cs_utils.instructor.gradescope run [--root /autograder]   # what run_autograder calls

The zip holds, at its root (Gradescope's autograder specification): ``setup.sh`` (installs Python,
bubblewrap, util-linux's ``setpriv`` and the pinned requirements), ``run_autograder`` (grades
``/autograder/submission``), and the grader with its hidden reference: this project's ``cs_utils``
(solutions included), ``data/`` (golden files), ``requirements.txt`` and ``grader_config.json``
(``seed``: null draws a fresh seed for every run, recorded for the instructor; ``--seed`` fixes it;
``hidden_visibility``: when students see the hidden cases' tests, default ``after_due_date``;
``exercises``: the assignment's exercises, default all, ``--only`` names them).

Gradescope runs ``run_autograder`` as root in a Docker container, where bubblewrap usually cannot
start: the fallback sandbox then runs the submission as the account ``cs-sandbox0`` (created here
when missing). Before the submission runs, ``/autograder/source`` (the grader and its reference),
``/autograder/submission`` and ``/autograder/results`` become root-only and are checked as that
account; the grader's files are hashed before and after. ``run`` writes
``/autograder/results/results.json`` itself, at the end, atomically, after removing whatever is at
that path: for each exercise a test for the public case (visible) and one for the hidden cases
(``hidden_visibility``), and the total. The seed, the isolation mode and the uid go to
``extra_data`` and to the standard output, which only instructors see. ``AUTOGRADER_ROOT`` (or
``--root``) moves the whole layout, for testing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path

from ..course import grading
from ..course.report import one_line
from .autograder import IntegrityError, draw_seed, grade
from .isolation import is_root, make_private, remove_tree, sandbox_account
from .judging import points_for
from .release import project_files
from .sandbox import isolation_mode
from .sandbox_files import PROJECT_ROOT

__all__ = ["HIDDEN_VISIBILITY", "build_autograder_zip", "results_json", "run", "write_results"]

#: Gradescope's visibilities for a test.
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
HIDDEN_VISIBILITY = "after_due_date"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
apt-get update
apt-get install -y python3 python3-pip python3-venv bubblewrap util-linux passwd
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --disable-pip-version-check -q -r /autograder/source/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into results/results.json.
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$ROOT/source"
exec "$PYTHON" -m cs_utils.instructor.gradescope run \\
    --root "$ROOT"
"""


def build_autograder_zip(out: Path, root: Path = PROJECT_ROOT, *, seed: int | None = None,
                         hidden_visibility: str = HIDDEN_VISIBILITY, names=None) -> Path:
    """Write the autograder zip for Gradescope to ``out``; return it. ``seed`` None: a fresh seed for
    every submission's run; ``names``: the assignment's exercises (default: all)."""
    for name in names or ():
        grading.get_exercise(name)   # a clear error for an unknown name
    if hidden_visibility not in VISIBILITIES:
        raise ValueError(f"hidden_visibility must be one of {', '.join(VISIBILITIES)}, "
                         f"not {hidden_visibility!r}")
    out, root = Path(out), Path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            zf.writestr(info, text)
        config = {"seed": None if seed is None else int(seed), "hidden_visibility": hidden_visibility,
                  "exercises": list(names) if names else None}
        zf.writestr("grader_config.json", json.dumps(config) + "\n")
        for rel in project_files(root):
            if rel.parts[0] in ("cs_utils", "data") or rel.as_posix() in (
                "requirements.txt",
                "pyproject.toml",
            ):
                zf.write(root / rel, rel.as_posix())
    return out


def _case_line(label: str, case: dict) -> str:
    return f"{label}: {case['status']}" + (f": {case['message']}" if case.get("message") else "")


def _tests(score: dict, hidden_visibility: str) -> list[dict]:
    """Two tests for one exercise: its public case (visible) and its hidden cases
    (``hidden_visibility``); their scores add up to the exercise's points."""
    name = f"{score['name']} ({score['module']})"
    hidden = score.get("hidden") or []
    public = score.get("public")
    n = len(hidden)
    share = score["max_points"] / (n + 1) if n else score["max_points"]
    passed = sum(c["status"] == "pass" for c in hidden)
    public_passed = public is not None and public["status"] == "pass"
    public_points = 0.0
    if public_passed and (passed or not n):
        public_points = points_for(score["max_points"], True, passed, n) - points_for(
            score["max_points"], False, passed, n)
    lines = [f"status: {score['status']}"]
    lines.append(_case_line("public case", public) if public else score.get("message") or "not graded")
    if public_passed and n and not passed:
        lines.append("the public case counts once a hidden case passes (a stored answer earns nothing)")
    if score.get("hint"):
        lines.append(f"hint: {score['hint']}")
    tests = [{
        "name": f"{name}: public case",
        "score": round(public_points, 2),
        "max_score": round(share, 2),
        "output": "\n".join(one_line(x, 400) for x in lines),
        "visibility": "visible",
    }]
    if n:
        hidden_lines = [_case_line(f"hidden case {i}", c) for i, c in enumerate(hidden, 1)]
        if score.get("rel_error") is not None:
            hidden_lines.append(f"largest relative error: {score['rel_error']:.1e}")
        tests.append({
            "name": f"{name}: hidden cases",
            "score": round(score["points"] - public_points, 2),
            "max_score": round(score["max_points"] - share, 2),
            "output": "\n".join(one_line(x, 400) for x in hidden_lines),
            "visibility": hidden_visibility,
        })
    return tests


def results_json(report: dict, hidden_visibility: str = HIDDEN_VISIBILITY) -> dict:
    """Gradescope's results.json for a report of :func:`cs_utils.instructor.autograder.grade`; the
    seed, the mode and the uid only in ``extra_data`` (never shown to students)."""
    output = "Graded in a sandbox on the public case and hidden cases of each exercise."
    if report.get("problem"):
        output = f"The submission could not be graded: {report['problem']}"
    return {
        "score": report["points"],
        "execution_time": round(float(report.get("seconds") or 0)),
        "output": output,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {k: report.get(k) for k in ("seed", "mode", "uid", "account", "limits")},
        "tests": [t for s in report["exercises"] for t in _tests(s, hidden_visibility)],
    }


def _submission(folder: Path) -> Path:
    """A lone ``.zip`` in the submission folder is the submission, else the folder itself."""
    zips = sorted(folder.glob("*.zip"))
    if len(zips) == 1 and not any(folder.glob("*.py")) and not (folder / grading.PACKAGE).is_dir():
        return zips[0]
    return folder


def write_results(results_dir: Path, results: dict) -> Path:
    """Write ``results_dir/results.json`` atomically, after removing whatever is at that path (a
    file, a folder, a link, a pipe): a new file created next to it, synced, renamed over it."""
    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        else:
            os.unlink(path)
    tmp = results_dir / f".results-{os.getpid()}-{time.monotonic_ns()}.json"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(results, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _config(root: Path) -> dict:
    try:
        config = json.loads((root / "source" / "grader_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    visibility = config.get("hidden_visibility")
    names = config.get("exercises")
    names = [n for n in names if n in grading.EXERCISES] if isinstance(names, list) else []
    return {
        "seed": config["seed"] if isinstance(config.get("seed"), int) else None,
        "hidden_visibility": visibility if visibility in VISIBILITIES else HIDDEN_VISIBILITY,
        "exercises": names or None,
    }


def run(root: Path) -> dict:
    """Grade ``root/submission`` and write ``root/results/results.json``; return what was written.
    As root: the sandbox account exists, and the grader's folders are root-only, before the
    submission runs."""
    root = Path(root).resolve()
    start = time.perf_counter()
    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    config = _config(root)
    seed = draw_seed() if config["seed"] is None else config["seed"]
    private = [root / "source", root / "submission", results_dir]
    if is_root():
        sandbox_account(0)
        os.chmod(root, 0o711)  # enterable, never listable or writable by the sandbox account
        for path in private:
            make_private(path)
    failed = None
    try:
        report = grade(_submission(root / "submission"), config["exercises"], seed=seed, private=private)
        results = results_json(report, config["hidden_visibility"])
    except IntegrityError as exc:
        failed = f"grading stopped: {exc}"
    except Exception as exc:  # noqa: BLE001 - results.json is written whatever happens
        failed = f"the grader failed: {one_line(exc)}"
    if failed is not None:
        try:
            mode = isolation_mode()[0]
        except Exception:  # noqa: BLE001
            mode = "none"
        results = {
            "score": 0.0,
            "output": f"{failed} (isolation: {mode})",
            "execution_time": round(time.perf_counter() - start),
            "stdout_visibility": "hidden",
            "extra_data": {"seed": seed, "mode": mode},
            "tests": [],
        }
    write_results(results_dir, results)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cs_utils.instructor.gradescope", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the autograder zip")
    build.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "gradescope_autograder.zip")
    build.add_argument("--seed", type=int, default=None,
                       help="seed of the hidden cases (default: a fresh one for every submission's run)")
    build.add_argument("--only", nargs="+", default=None, metavar="NAME",
                       help="the assignment's exercises (default: all)")
    build.add_argument("--hidden-visibility", default=HIDDEN_VISIBILITY, choices=VISIBILITIES,
                       help=f"when students see the hidden cases' tests (default {HIDDEN_VISIBILITY})")
    runner = sub.add_parser("run", help="grade ROOT/submission into ROOT/results/results.json")
    runner.add_argument("--root", type=Path, default=Path(os.environ.get("AUTOGRADER_ROOT", "/autograder")))
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build_autograder_zip(args.out, seed=args.seed, hidden_visibility=args.hidden_visibility,
                                    names=args.only)
        print(f"wrote {path}: upload it as the assignment's autograder on Gradescope")
        return 0
    results = run(args.root)
    extra = results.get("extra_data") or {}
    print(  # the standard output is the instructor's only (stdout_visibility hidden)
        f"score {results['score']} ({len(results['tests'])} tests): "
        f"{args.root / 'results' / 'results.json'}; seed {extra.get('seed')}, isolation {extra.get('mode')}, "
        f"uid {extra.get('uid')} ({extra.get('account')}), {extra.get('limits')}"
    )
    failed = str(results.get("output", "")).startswith(("grading stopped", "the grader failed"))
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
