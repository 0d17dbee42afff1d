"""How long a whole class takes to grade, with hostile neighbours among it.

    .venv/bin/python benchmarks/bench_class_grading.py [--correct 30] [--jobs N] [--mode bubblewrap|fallback]

Writes ``--correct`` correct submissions (``make submit``'s zip layout) and two hostile ones into a
temporary class folder and grades it with ``python -m cs_utils.instructor.grade --class`` (as an
instructor would, default settings: 16 exercises, 2 hidden cases each, a fresh seed):

* ``hang``: every exercise module sleeps forever when imported;
* ``hog``: every exercise module starts eight busy processes in their own sessions, then loops.

First grades one correct submission alone (``python -m cs_utils.instructor.grade s000.zip``; goal:
full marks in at most 12 s wall), then prints the wall time of the class, each correct
submission's points (the goal: all at full marks), the two hostile ones' statuses, and the slowest
correct exercise. The goal on 2 cores: under
240 s for 30 correct and 2 hostile submissions. Needs root (the sandbox accounts).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANG = "import time\ntime.sleep(10**6)\n"
HOG = (
    "import subprocess, sys\n"
    "for _ in range(8):\n"
    "    subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True)\n"
    "while True:\n"
    "    pass\n"
)


def write_class(folder: Path, correct: int) -> None:
    modules = sorted((ROOT / "cs_utils").glob("*.py"))
    for i in range(correct):
        with zipfile.ZipFile(folder / f"s{i:03d}.zip", "w") as zf:
            for path in modules:
                zf.write(path, f"cs_utils/{path.name}")
    for name, prefix in (("x_hang", HANG), ("x_hog", HOG)):
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
            for path in modules:
                zf.writestr(f"cs_utils/{path.name}", path.read_text() + "\n" + prefix)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correct", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=None, help="default: the grader's")
    parser.add_argument("--mode", choices=("bubblewrap", "fallback"), default=None)
    args = parser.parse_args(argv)
    top = Path(tempfile.mkdtemp(prefix="bench-class-"))
    try:
        (top / "class").mkdir()
        write_class(top / "class", args.correct)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if args.mode == "fallback":
            env["CS_UTILS_SANDBOX"] = "fallback"
        start = time.perf_counter()
        one = subprocess.run([sys.executable, "-m", "cs_utils.instructor.grade",
                              str(top / "class" / "s000.zip"), "--json", str(top / "one.json")],
                             env=env, cwd=ROOT, capture_output=True, text=True)
        single = time.perf_counter() - start
        report = json.loads((top / "one.json").read_text()) if one.returncode == 0 else {}
        print(f"one correct submission alone: {report.get('points')}/{report.get('max_points')} points in "
              f"{single:.1f} s wall (goal: full marks in at most 12 s); {report.get('mode')} as "
              f"{report.get('account')} (uid {report.get('uid')}), {report.get('limits')}")
        cmd = [sys.executable, "-m", "cs_utils.instructor.grade", "--class", str(top / "class"),
               "--out", str(top / "grades")]
        if args.jobs:
            cmd += ["--jobs", str(args.jobs)]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        with open(top / "grades" / "grades.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        correct = [r for r in rows if r["student_id"].startswith("s")]
        full = sum(float(r["score"]) == float(r["max_score"]) for r in correct)
        slowest = 0.0
        for path in (top / "grades" / "reports").glob("s*.json"):
            report = json.loads(path.read_text())
            slowest = max([slowest] + [e["seconds"] for e in report["exercises"]])
            mode = report["mode"]
        print(f"class of {len(correct)} correct + 2 hostile, {mode}, jobs {args.jobs or 'default'}: "
              f"{wall:.1f} s wall (goal < 240 s on 2 cores)")
        print(f"correct at full marks: {full}/{len(correct)}; slowest correct exercise {slowest:.2f} s")
        for r in rows:
            if not r["student_id"].startswith("s"):
                print(f"{r['student_id']}: {r['score']}/{r['max_score']}  {r['notes'][:150]}")
        return 0 if full == len(correct) else 1
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
