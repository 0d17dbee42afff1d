"""Gradescope: the autograder zip, and what runs in Gradescope's container for each submission.

::

    make gradescope                                       # build/gradescope_autograder.zip
    python -m cs_utils.instructor.gradescope build --out autograder.zip [--seed N]
    python -m cs_utils.instructor.gradescope run [--root /autograder]   # what run_autograder calls

The zip holds, at its root (Gradescope's autograder specification): ``setup.sh`` (installs Python,
bubblewrap and the pinned requirements), ``run_autograder`` (grades ``/autograder/submission``),
and the grader with its hidden reference: this project's ``cs_utils`` (solutions included),
``data/`` (golden files), ``requirements.txt`` and ``grader_config.json`` (the seed of the hidden
cases, drawn when the zip is built unless ``--seed`` is given, so every regrade draws the same).

``run`` writes ``/autograder/results/results.json``: one test per exercise (``name``, ``score``,
``max_score``, ``output``, ``visibility``) and the total. It always writes it, whatever the
submission holds. ``AUTOGRADER_ROOT`` (or ``--root``) moves the whole layout, for testing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import zipfile
from pathlib import Path

from ..course import grading
from ..course.report import one_line
from .autograder import grade
from .release import project_files
from .sandbox import PROJECT_ROOT, isolation_mode

__all__ = ["build_autograder_zip", "results_json", "run"]

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
apt-get update
apt-get install -y python3 python3-pip python3-venv bubblewrap
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


def build_autograder_zip(out: Path, root: Path = PROJECT_ROOT, *, seed: int | None = None) -> Path:
    """Write the autograder zip for Gradescope to ``out``; return it."""
    out, root = Path(out), Path(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            zf.writestr(info, text)
        zf.writestr("grader_config.json", json.dumps({"seed": seed}) + "\n")
        for rel in project_files(root):
            if rel.parts[0] in ("cs_utils", "data") or rel.as_posix() in (
                "requirements.txt",
                "pyproject.toml",
            ):
                zf.write(root / rel, rel.as_posix())
    return out


def _test(score: dict) -> dict:
    lines = [f"status: {score['status']}"]
    if score.get("public"):
        public = score["public"]
        lines.append(
            f"public case: {public['status']}" + (f": {public['message']}" if public["message"] else "")
        )
    for i, case in enumerate(score.get("hidden") or [], 1):
        lines.append(
            f"hidden case {i}: {case['status']}" + (f": {case['message']}" if case["message"] else "")
        )
    if score.get("rel_error") is not None:
        lines.append(f"largest relative error: {score['rel_error']:.1e}")
    if score.get("hint"):
        lines.append(f"hint: {score['hint']}")
    if score.get("message") and not score.get("public"):
        lines.append(score["message"])
    return {
        "name": f"{score['name']} ({score['module']})",
        "score": score["points"],
        "max_score": score["max_points"],
        "output": "\n".join(one_line(x, 400) for x in lines),
        "visibility": "visible",
    }


def results_json(report: dict) -> dict:
    """Gradescope's results.json for a report of :func:`cs_utils.instructor.autograder.grade`."""
    output = f"Graded in a {report.get('mode')} sandbox on the public case and hidden cases of each exercise."
    if report.get("problem"):
        output = f"The submission could not be graded: {report['problem']}"
    return {
        "score": report["points"],
        "execution_time": round(float(report.get("seconds") or 0)),
        "output": output,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [_test(s) for s in report["exercises"]],
    }


def _submission(folder: Path) -> Path:
    """A lone ``.zip`` in the submission folder is the submission, else the folder itself."""
    zips = sorted(folder.glob("*.zip"))
    if len(zips) == 1 and not any(folder.glob("*.py")) and not (folder / grading.PACKAGE).is_dir():
        return zips[0]
    return folder


def run(root: Path) -> dict:
    """Grade ``root/submission`` and write ``root/results/results.json``; return what was written."""
    root = Path(root)
    start = time.perf_counter()
    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = json.loads((root / "source" / "grader_config.json").read_text())
        seed = int(config["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        seed = 0
    try:
        report = grade(_submission(root / "submission"), seed=seed)
        results = results_json(report)
    except Exception as exc:  # noqa: BLE001 - results.json is written whatever happens
        results = {
            "score": 0.0,
            "output": f"the grader failed: {one_line(exc)} (isolation: {isolation_mode()[0]})",
            "execution_time": round(time.perf_counter() - start),
            "tests": [],
        }
    path = results_dir / "results.json"
    tmp = path.with_name("results.json.part")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cs_utils.instructor.gradescope", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the autograder zip")
    build.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "gradescope_autograder.zip")
    build.add_argument("--seed", type=int, default=None, help="seed of the hidden cases (default: drawn now)")
    runner = sub.add_parser("run", help="grade ROOT/submission into ROOT/results/results.json")
    runner.add_argument("--root", type=Path, default=Path(os.environ.get("AUTOGRADER_ROOT", "/autograder")))
    args = parser.parse_args(argv)
    if args.command == "build":
        path = build_autograder_zip(args.out, seed=args.seed)
        print(f"wrote {path}: upload it as the assignment's autograder on Gradescope")
        return 0
    results = run(args.root)
    print(
        f"score {results['score']} ({len(results['tests'])} tests): {args.root / 'results' / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
