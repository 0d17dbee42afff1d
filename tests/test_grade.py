"""The autograder: every failure of a submission costs only the exercises it touches, with the reason."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cs_utils.course import grade, grading

ROOT = Path(__file__).resolve().parent.parent


def _allow_unix_sockets():
    """The grader talks to its worker processes over a Unix socket (multiprocessing's forkserver);
    the network stays blocked."""
    import pytest_socket

    pytest_socket.socket_allow_hosts(["127.0.0.1", "::1"], allow_unix_socket=True)


def _submission(tmp_path: Path) -> Path:
    """A copy of the solution's cs_utils, as a student would hand in their folder."""
    package = tmp_path / "cs_utils"
    shutil.copytree(ROOT / "cs_utils", package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory):
    """One submission with a different failure in each of six modules, graded once."""
    package = _submission(tmp_path_factory.mktemp("broken"))
    _append(package / "fast_style.py", "def broken(:\n    pass")                   # syntax error
    _append(package / "dream.py", "import a_module_nobody_installed")                  # import error
    _append(package / "neighbours.py", "def nearest_neighbours(queries, gallery, k, *, exclude=None):\n"
                                       "    raise ValueError('the distances went wrong')")  # exception
    _append(package / "style.py", "def mix_styles(targets, weights):\n"
                                  "    while True:\n        pass")                       # endless loop
    _append(package / "adversarial.py", "def fooling_step(model, x, target, *, step_size=0.25):\n"
                                        "    import numpy\n"
                                        "    return numpy.ones(200_000_000)")            # 1.6 GB
    _append(package / "class_viz.py", "def class_visualization_step(model, img, target, **kwargs):\n"
                                      "    import os\n    os._exit(3)")                  # the process dies
    names = ["instance_norm", "deepdream_step", "nearest_neighbours", "receptive_field", "mix_styles",
             "fooling_step", "class_visualization_step", "tv_loss", "guided_relu_grad"]
    _allow_unix_sockets()
    report = grade.grade(package, names, timeout=8, memory_mb=600)
    return {s["name"]: s for s in report["exercises"]}, report


@pytest.mark.parametrize("name, status, reason", [
    ("instance_norm", "error", "cannot import cs_utils/fast_style.py: SyntaxError in fast_style.py line"),
    ("deepdream_step", "error", "ModuleNotFoundError: No module named 'a_module_nobody_installed'"),
    ("nearest_neighbours", "error", "ValueError: the distances went wrong (in nearest_neighbours, "),
    ("mix_styles", "timeout", "no result within the time limit of 8 s"),
    ("fooling_step", "memory", "memory limit of 600 MB exceeded"),
    ("class_visualization_step", "crashed", "the process ended without a result (exit code 3)"),
])
def test_each_failure_costs_its_exercise_with_the_reason(broken_report, name, status, reason):
    scores, _ = broken_report
    assert scores[name]["status"] == status, scores[name]
    assert reason in scores[name]["message"]
    assert scores[name]["points"] == 0 and scores[name]["max_points"] == 1


def test_the_other_exercises_are_still_graded(broken_report):
    scores, report = broken_report
    # receptive_field (receptive_fields.py) is graded apart from the broken nearest_neighbours (neighbours.py)
    assert scores["receptive_field"]["status"] == "pass" and scores["receptive_field"]["points"] == 1
    assert scores["guided_relu_grad"]["status"] == scores["tv_loss"]["status"] == "pass"
    assert report["points"] == 3 and report["max_points"] == 9
    assert scores["mix_styles"]["seconds"] >= 8


def test_a_broken_module_costs_only_its_own_exercises(tmp_path):
    """losses.py, optimize.py and adversarial.py are imported by other exercise modules (style, dream,
    fast_style, class_viz): each of those is graded with the grader's copies of the modules it imports.
    nearest_neighbours and receptive_field live in separate modules: a syntax error in neighbours.py
    zeroes nearest_neighbours alone."""
    package = _submission(tmp_path)
    for name in ("losses.py", "optimize.py", "adversarial.py", "hooks.py", "checks.py", "neighbours.py"):
        _append(package / name, "def broken(:\n    pass")
    names = ["class_visualization_step", "deepdream_step", "mix_styles", "instance_norm", "receptive_field",
             "gram_matrix", "nearest_neighbours"]
    _allow_unix_sockets()
    report = grade.grade(package, names, timeout=60)
    scores = {s["name"]: s for s in report["exercises"]}
    assert scores.pop("gram_matrix")["status"] == "error"          # its own module is broken
    broken = scores.pop("nearest_neighbours")
    assert broken["status"] == "error" and broken["points"] == 0
    assert "cannot import cs_utils/neighbours.py: SyntaxError in neighbours.py line" in broken["message"]
    assert {name: s["status"] for name, s in scores.items()} == dict.fromkeys(scores, "pass")
    assert report["points"] == 5 and report["max_points"] == 7


def test_a_complete_correct_submission_gets_full_marks(tmp_path):
    """Through the command line, on the whole project, with the JSON for a course platform."""
    out = tmp_path / "scores.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "cs_utils.course.grade", str(ROOT), "--json", str(out)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    n = len(grading.EXERCISES)
    assert [s["name"] for s in report["exercises"]] == grading.exercise_names()
    assert report["points"] == report["max_points"] == n
    for score in report["exercises"]:
        assert score["status"] == "pass"
        assert score["rel_error"] <= grading.get_exercise(score["name"]).tolerance
        assert set(score) == {"name", "module", "function", "points", "max_points", "status", "rel_error",
                              "message", "seconds"}
    assert f"total: {n}/{n} points" in run.stdout
    assert run.stdout.count(" pass ") == n
    assert "Warning" not in run.stderr


def test_the_submission_is_a_cs_utils_folder_or_a_project(tmp_path):
    package = tmp_path / "project" / "cs_utils"
    package.mkdir(parents=True)
    (package / "losses.py").write_text("")
    assert grade.find_package(tmp_path / "project") == package
    assert grade.find_package(package) == package
    with pytest.raises(FileNotFoundError, match="neither a cs_utils/ folder nor .py files"):
        grade.find_package(tmp_path)
    assert grade.main([str(tmp_path / "missing")]) == 2


def test_the_table_has_one_row_per_exercise():
    report = {"package": "/x/cs_utils", "points": 1, "max_points": 2, "seconds": 3.0, "exercises": [
        {"name": "gram_matrix", "points": 1, "max_points": 1, "status": "pass", "rel_error": 2e-8,
         "seconds": 0.1, "message": ""},
        {"name": "tv_loss", "points": 0, "max_points": 1, "status": "timeout", "rel_error": None,
         "seconds": 60.0, "message": "no result"}]}
    lines = grade.render_table(report).splitlines()
    assert lines[3].split()[:4] == ["gram_matrix", "1/1", "pass", "2.0e-08"]
    assert lines[4].split()[:5] == ["tv_loss", "0/1", "timeout", "-", "60.00"]
    assert lines[-1] == "total: 1/2 points (2 exercises, 3.0 s)"
