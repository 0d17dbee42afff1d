"""The hostile class graded in one isolation mode, and what must hold afterwards.

``test_attacks_bubblewrap.py`` and ``test_attacks_fallback.py`` set ``MODE`` and import these tests:
the same attacks, the same checks, in each mode the grader can run in (the fallback as root, as it
runs in a Docker container). See :mod:`hostile_submissions` for the attacks and their variants.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pwd
import shutil
from pathlib import Path

import hostile_submissions as hostile
import pytest
from conftest import require_root

from cs_utils.instructor import autograder, class_grading
from cs_utils.instructor.isolation import ACCOUNT_PREFIX
from cs_utils.instructor.sandbox import isolation_mode

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5
MEMORY_MB = 512
SEED = 7


def _tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _accounts() -> set[int]:
    return {e.pw_uid for e in pwd.getpwall() if e.pw_name.startswith(ACCOUNT_PREFIX)}


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def hostile_run(request):
    mode = request.module.MODE
    require_root("the sandbox accounts")
    if mode == "bubblewrap":
        assert isolation_mode()[0] == "bubblewrap", f"CI installs bubblewrap: {isolation_mode()[1]}"
    top = hostile.world_readable_folder("hostile-class-")
    try:
        names = hostile.NAMES
        cases = autograder.prepare_cases(names, SEED, 2, top / "reference-inputs")
        stolen = hostile.stolen_results(top / "stolen", "content_loss", cases)
        cases.close()
        marker = f"cs-utils-hostile-{os.getpid()}"
        targets = hostile.Targets(class_dir=str(top / "class"), out=str(top / "grades"), victim="b_victim",
                                  stolen=str(stolen), marker=marker)
        class_dir = hostile.hostile_class(top / "class", targets)
        victim_files = _tree_digest(class_dir / "b_victim")
        grader_files = autograder.grader_digest()
        hostile.open_to_all(top)
        reports = class_grading.grade_class(class_dir, top / "grades", names=names, seed=SEED, hidden=2,
                                            timeout=TIMEOUT, memory_mb=MEMORY_MB, jobs=2, mode=mode,
                                            progress=False)
        shared = [p for d in ("/tmp", "/dev/shm") for p in Path(d).glob(f"{marker}*")]
        result = {
            "mode": mode,
            "reports": {r["student"]: r for r in reports},
            "top": top,
            "out": top / "grades",
            "class": class_dir,
            "victim_unchanged": _tree_digest(class_dir / "b_victim") == victim_files,
            "grader_unchanged": autograder.grader_digest() == grader_files,
            "processes": _processes_with(marker),
            "shared_left": shared,
            "modes": {str(p): oct(p.stat().st_mode & 0o777) for p in (class_dir, top / "grades")},
            "sysv_keys": {str(hostile.sysv_key(marker) + i) for i in range(8)},
        }
        yield result
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _scores(report):
    return {s["name"]: s for s in report["exercises"]}


def test_every_attack_scores_zero_with_the_status_that_stopped_it(hostile_run):
    for student, plan in hostile.CLASS.items():
        scores = _scores(hostile_run["reports"][student])
        for exercise, attack in plan.items():
            score = scores[exercise]
            statuses, says = hostile.STOPPED_AS[attack]
            assert score["points"] == 0, (student, exercise, score)
            assert score["status"] in statuses, (student, exercise, score)
            if score["status"] == "error":
                assert says in score["message"], (attack, score["message"])


def test_the_other_exercises_of_each_student_are_graded_normally(hostile_run):
    for student, plan in hostile.CLASS.items():
        report = hostile_run["reports"][student]
        normal = {n: s["status"] for n, s in _scores(report).items() if n not in plan}
        assert normal == dict.fromkeys(normal, "pass"), (student, normal)
        assert report["points"] == len(normal)


def test_the_report_says_which_mode_and_which_uid_graded(hostile_run):
    uids = _accounts()
    for report in hostile_run["reports"].values():
        assert report["mode"] == hostile_run["mode"]
        assert report["uid"] in uids and report["uid"] != 0 and report["account"].startswith(ACCOUNT_PREFIX)
        assert report["limits"].startswith("cgroup v1") or report["limits"].startswith("cgroup v2") \
            or report["limits"].startswith("rlimits only")
    # two sandboxes ran at once: two accounts
    assert len({r["uid"] for r in hostile_run["reports"].values()}) >= 2


def test_the_hog_left_its_neighbour_whole(hostile_run):
    victim = hostile_run["reports"]["b_victim"]
    assert victim["points"] == victim["max_points"] == len(hostile.NAMES)
    for score in victim["exercises"]:
        assert score["seconds"] < TIMEOUT / 2, score


def test_no_student_touched_another_or_the_grader(hostile_run):
    out = hostile_run["out"]
    assert hostile_run["victim_unchanged"] and hostile_run["grader_unchanged"]
    assert sorted(p.name for p in (out / "reports").iterdir()) == sorted(
        f"{s}.json" for s in hostile.CLASS)               # nothing planted
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(rows["b_victim"]["score"]) == len(hostile.NAMES)
    assert all(r["seed"] == str(SEED) for r in rows.values())
    assert hostile_run["modes"] == {str(hostile_run["class"]): "0o700", str(out): "0o700"}


def test_a_formula_in_a_student_id_is_quoted_in_the_csv(hostile_run):
    text = (hostile_run["out"] / "grades.csv").read_text()
    assert ",'=SUM(1;2)," in text and ",=SUM" not in text


def test_nothing_of_the_sandbox_accounts_outlives_the_grading(hostile_run):
    """No process (the hog's detached loops included), no file in /tmp or /dev/shm, no System V
    segment of the accounts that graded this class is left."""
    assert hostile_run["processes"] == []
    assert hostile_run["shared_left"] == []
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    keys = {dict(zip(lines[0].split(), line.split()))["key"] for line in lines[1:]}
    assert not keys & hostile_run["sysv_keys"]
