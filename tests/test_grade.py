"""The autograder: a class of five mixed submissions graded once (bubblewrap), attacks that must
score zero while the rest is graded normally, the fallback sandbox, grades.csv, feedback, resuming."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import cs_utils
from cs_utils.course import grading
from cs_utils.course.questions import QUESTIONS
from cs_utils.course.report import render_table
from cs_utils.instructor import autograder, class_grading
from cs_utils.instructor.sandbox import isolation_mode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_submissions as fake  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MARKER = f"cs-utils-attack-{uuid.uuid4().hex[:12]}"
NAMES = grading.exercise_names()
TIMEOUT, MEMORY_MB = 15, 1024  # at 10 s a correct integrated_gradients lost a case under 3 workers
FALLBACK_TIMEOUT = 8

#: exercise: (status, text in the message) that each attack must end with
EXPECTED = {
    "gram_matrix": ("error", "FileNotFoundError"),
    "content_loss": ("fail", "content loss = weight"),
    "style_loss": ("fail", "hidden case 1: "),
    "tv_loss": ("invalid", "cannot be read as plain arrays"),
    "saliency_map": ("fail", "NaN"),
    "occlusion_map": ("crashed", "the process ended without a result (exit code 0)"),
    "guided_relu_grad": ("invalid", "malformed"),
    "fooling_step": ("crashed", "the sandbox ended before the result"),
    "class_visualization_step": ("error", "larger than the 64 MB"),
    # RLIMIT_NPROC holds for the sandbox account: the fork fails, or the runner stops the bomb
    "deepdream_step": (("error", "crashed", "invalid"), ""),
    "receptive_field": ("memory", f"memory limit of {MEMORY_MB} MB exceeded"),
    "nearest_neighbours": ("fail", "Euclidean distances"),
    "instance_norm": ("not implemented", "write instance_norm in cs_utils/fast_style.py"),
    "mix_styles": ("timeout", f"no result within the time limit of {TIMEOUT} s"),
    "grad_cam": ("error", "PermissionError: no file outside the scratch folder could be written"),
    "integrated_gradients": ("error",
                             "Boom\\ngram_matrix    1/1  pass\\ntotal: 16/16 points: first \\x1b[2J line ("),
}


def _release_copy(folder: Path) -> Path:
    """The student release (``make student``): the whole project, every solution stripped."""
    from cs_utils.instructor.release import build_release

    build_release(folder, ROOT)
    return folder


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """Five submissions graded once as a class: the solution (zip), the release, two attackers and a
    corrupt zip."""
    assert isolation_mode()[0] == "bubblewrap", f"these tests need bubblewrap: {isolation_mode()[1]}"
    base = tmp_path_factory.mktemp("class")
    submissions = base / "submissions"
    submissions.mkdir()
    fake.zip_folder(fake.solution_copy(base / "solution"), submissions / "s01_correct.zip")
    _release_copy(submissions / "s02_release")
    fake.attacker(submissions / "s03_attacker_a", fake.ATTACKER_A, MARKER)
    fake.attacker(submissions / "s04_attacker_b", fake.ATTACKER_B, MARKER)  # the project folder
    (submissions / "s05_broken.zip").write_bytes(b"PK\x03\x04 this is not a zip file")
    watched = ROOT / "cs_utils" / "course" / "grading.py"
    before = _digest(watched)
    out = base / "grades"
    reports = class_grading.grade_class(
        submissions, out, seed=3, hidden=2, timeout=TIMEOUT, memory_mb=MEMORY_MB, jobs=2, progress=False
    )
    leftovers = _processes_with(MARKER)
    return {
        "reports": {r["student"]: r for r in reports},
        "out": out,
        "submissions": submissions,
        "leftovers": leftovers,
        "unchanged": _digest(watched) == before,
    }


def _scores(report: dict) -> dict:
    return {s["name"]: s for s in report["exercises"]}


def test_ci_grades_in_bubblewrap(class_run):
    """CI installs bubblewrap (.ci/run): the class was graded in it, and it said so."""
    assert isolation_mode()[0] == "bubblewrap", isolation_mode()
    assert {r["mode"] for r in class_run["reports"].values()} == {"bubblewrap"}
    # checked inside the sandbox: `import cs_utils` is the sandbox's copy of the release, not the grader's
    assert class_run["reports"]["s01_correct"]["sandbox_cs_utils"] == "/sandbox/base/cs_utils/__init__.py"


def test_a_correct_submission_gets_full_marks(class_run):
    report = class_run["reports"]["s01_correct"]
    assert report["points"] == report["max_points"] == len(NAMES) == 16
    for score in report["exercises"]:
        tolerance = grading.get_exercise(score["name"]).tolerance
        assert score["status"] == "pass" and score["points"] == 1, score
        assert score["public"]["status"] == "pass" and [c["status"] for c in score["hidden"]] == [
            "pass",
            "pass",
        ]
        assert score["rel_error"] <= tolerance


def test_the_student_release_scores_zero(class_run):
    report = class_run["reports"]["s02_release"]
    assert report["points"] == 0 and report["max_points"] == 16
    for score in report["exercises"]:
        exercise = grading.get_exercise(score["name"])
        assert score["status"] == "not implemented", score
        assert (
            score["public"]["message"] == f"not implemented yet: write {exercise.function} in {exercise.path}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_each_attack_scores_zero_on_its_exercise(class_run, name):
    student = "s03_attacker_a" if name in fake.ATTACKER_A else "s04_attacker_b"
    score = _scores(class_run["reports"][student])[name]
    status, text = EXPECTED[name]
    assert score["points"] == 0 and score["max_points"] == 1, score
    assert score["status"] in (status if isinstance(status, tuple) else (status,)), score
    assert text in score["message"], score["message"]


def test_the_other_exercises_are_graded_normally(class_run):
    for student, attacked in (("s03_attacker_a", fake.ATTACKER_A), ("s04_attacker_b", fake.ATTACKER_B)):
        report = class_run["reports"][student]
        normal = {n: s["status"] for n, s in _scores(report).items() if n not in attacked}
        assert normal == dict.fromkeys(normal, "pass") and len(normal) == 8
        assert report["points"] == 8


def test_stored_answers_pass_the_public_case_only(class_run):
    score = _scores(class_run["reports"]["s03_attacker_a"])["style_loss"]
    assert score["public"]["status"] == "pass"
    assert [c["status"] for c in score["hidden"]] == ["fail", "fail"]


def test_nothing_outlives_the_grader_and_nothing_was_written_or_unpickled(class_run):
    assert class_run["leftovers"] == []  # the grandchild and the fork bomb are gone
    assert class_run["unchanged"]  # the grader's files
    assert not Path(f"/tmp/{MARKER}-write").exists()  # the sandbox's /tmp is its own
    assert not Path(f"/tmp/{MARKER}-pickle").exists()  # the pickle never ran


def test_messages_cannot_forge_rows_or_the_total(class_run):
    table = render_table(class_run["reports"]["s04_attacker_b"]).splitlines()
    assert [line for line in table if line.startswith("total:")] == [
        f"total: 8/16 points (16 exercises, {class_run['reports']['s04_attacker_b']['seconds']:.1f} s)"
    ]
    for name in NAMES:
        assert sum(line.split(" ", 1)[0] == name for line in table) == 1, name
    assert not any("\x1b" in line for line in table)
    assert "Boom\\ngram_matrix    1/1  pass\\ntotal: 16/16 points: first \\x1b[2J line (" in "\n".join(table)


def test_grades_csv_has_nbgraders_columns_and_a_row_per_student(class_run):
    with open(class_run["out"] / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    questions = list(QUESTIONS)
    assert list(rows[0]) == class_grading.NBGRADER_COLUMNS + NAMES + questions + ["written_points", "notes",
                                                                                  "seed"]
    assert {r["seed"] for r in rows} == {"3"}
    written = sum(q.points for q in QUESTIONS.values())  # counted in max_score, none scored yet
    got = {r["student_id"]: (float(r["raw_score"]), float(r["score"]), float(r["max_score"])) for r in rows}
    assert got == {
        "s01_correct": (16, 16, 16 + written),
        "s02_release": (0, 0, 16 + written),
        "s03_attacker_a": (8, 8, 16 + written),
        "s04_attacker_b": (8, 8, 16 + written),
        "s05_broken": (0, 0, 16 + written),
    }
    assert all(r[q] == "" and float(r["written_points"]) == 0 for r in rows for q in questions)
    by_id = {r["student_id"]: r for r in rows}
    assert by_id["s05_broken"]["notes"].startswith("not a readable zip file")
    assert "mix_styles: timeout" in by_id["s04_attacker_b"]["notes"]
    assert by_id["s03_attacker_a"]["gram_matrix"] == "0.0" and by_id["s03_attacker_a"]["tv_loss"] == "1.0"
    assert all(r["assignment"] == "visualizing_cnns" for r in rows)


def test_one_feedback_file_per_student(class_run):
    files = sorted(p.name for p in (class_run["out"] / "feedback").iterdir())
    assert files == [f"{s}.md" for s in sorted(class_run["reports"])]
    text = (class_run["out"] / "feedback" / "s03_attacker_a.md").read_text()
    written = sum(q.points for q in QUESTIONS.values())
    assert f"**Total: 8 / {16 + written} points**: exercises 8 / 16, written questions 0 / {written} " \
        f"(0 of {len(QUESTIONS)} graded)" in text
    assert "| q01_filters | not graded yet |  |" in text
    assert "| saliency_map | 0/1 | fail | fail | 0/2 |" in text
    assert "## Hints" in text and grading.get_exercise("saliency_map").hint in text


def test_an_interrupted_class_run_resumes(class_run, tmp_path):
    """Two reports lost (as if the run stopped before them): only those two are graded again."""
    out = tmp_path / "grades"
    shutil.copytree(class_run["out"], out)
    for student in ("s02_release", "s05_broken"):
        (out / "reports" / f"{student}.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "reports").iterdir()}
    reports = class_grading.grade_class(
        class_run["submissions"],
        out,
        seed=3,
        hidden=2,
        timeout=TIMEOUT,
        memory_mb=MEMORY_MB,
        jobs=2,
        progress=False,
    )
    assert [r["student"] for r in reports] == sorted(class_run["reports"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "reports").iterdir() if p.name in kept} == kept
    assert sorted(p.name for p in (out / "reports").iterdir()) == sorted(
        f"{s}.json" for s in class_run["reports"]
    )
    assert (out / "grades.csv").read_text() == (class_run["out"] / "grades.csv").read_text()


def test_a_class_run_stopped_halfway_keeps_what_it_graded(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for student in ("a1", "a2", "a3"):
        (submissions / student).mkdir()  # empty folders: nothing to grade, a row each
    out = tmp_path / "grades"
    names = ["gram_matrix", "tv_loss"]
    assert len(class_grading.grade_class(submissions, out, names=names, stop_after=2, progress=False)) == 2
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["a1.json", "a2.json"]
    reports = class_grading.grade_class(submissions, out, names=names, progress=False)
    assert [r["student"] for r in reports] == ["a1", "a2", "a3"]
    assert all("holds neither a cs_utils/ folder nor .py files" in r["problem"] for r in reports)
    assert len((out / "grades.csv").read_text().splitlines()) == 4


# --------------------------------------------------------------------------- the fallback sandbox

#: Every attack but the three whose exercises the fallback test uses otherwise: as root, the fallback
#: runs the submission as a sandbox account, so the attacks on the grader's files fail there too.
FALLBACK_ATTACKS = tuple(n for n in NAMES
                         if n not in ("gram_matrix", "mix_styles", "class_visualization_step"))


@pytest.fixture(scope="module")
def fallback_report(tmp_path_factory):
    marker = MARKER + "-fb"
    package = fake.attacker(tmp_path_factory.mktemp("fallback"), FALLBACK_ATTACKS, marker)
    fake.replace(package, "losses", fake.DISK_FILLER)
    fake.replace(package, "style", fake.DETACHED_LOOP.replace("MARKER", marker))
    names = ["gram_matrix", "mix_styles", "class_visualization_step", *FALLBACK_ATTACKS]
    report = autograder.grade(package.parent, names, seed=5, hidden=2, timeout=FALLBACK_TIMEOUT,
                              memory_mb=MEMORY_MB, mode="fallback")
    return report, _processes_with(marker)


def test_the_fallback_sandbox_stops_every_attack(fallback_report):
    report, leftovers = fallback_report
    assert report["mode"] == "fallback" and leftovers == []   # the detached grandchild included
    scores = _scores(report)
    for name in FALLBACK_ATTACKS:
        status, text = EXPECTED[name]
        statuses = status if isinstance(status, tuple) else (status,)
        assert scores[name]["points"] == 0 and scores[name]["status"] in statuses, scores[name]
        assert text in scores[name]["message"]
    assert scores["gram_matrix"]["status"] == "crashed" and scores["gram_matrix"]["points"] == 0
    assert "2000 files or 32 nested folders into its scratch folder" in scores["gram_matrix"]["message"]
    assert scores["mix_styles"]["status"] == "timeout" and scores["mix_styles"]["points"] == 0
    assert scores["class_visualization_step"]["status"] == "pass"
    assert report["points"] == 1 and report["max_points"] == 3 + len(FALLBACK_ATTACKS)
    assert report["account"].startswith("cs-sandbox") and report["uid"] != 0
    assert not Path(f"/tmp/{MARKER}-fb-pickle").exists()


# --------------------------------------------------------------------------- command line, shims


def test_the_command_line_grades_a_zip_and_writes_the_json(tmp_path):
    submission = fake.zip_folder(fake.solution_copy(tmp_path / "s"), tmp_path / "submission.zip")
    out = tmp_path / "scores.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cs_utils.instructor.grade",
            str(submission),
            "--only",
            "gram_matrix",
            "tv_loss",
            "--seed",
            "11",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["points"] == report["max_points"] == 2 and report["seed"] == 11
    assert set(report["exercises"][0]) == {
        "name",
        "module",
        "function",
        "points",
        "max_points",
        "status",
        "rel_error",
        "message",
        "hint",
        "seconds",
        "public",
        "hidden",
    }
    assert "total: 2/2 points (2 exercises" in run.stdout
    isolation = next(line for line in run.stdout.splitlines() if line.startswith("isolation: "))
    assert isolation.startswith(f"isolation: {isolation_mode()[0]} as cs-sandbox") and " (uid " in isolation
    assert isolation.endswith("; hidden cases from seed 11")


def test_unknown_exercises_and_missing_submissions_are_usage_errors(tmp_path, capsys):
    from cs_utils.instructor.grade import main

    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path), "--only", "gram_matrixx"]) == 2
    assert "Did you mean 'gram_matrix'?" in capsys.readouterr().err


def test_the_golden_checks_have_one_home():
    assert cs_utils.check_exercise is grading.check
    package = Path(cs_utils.__file__).parent
    assert not (package / "grading.py").exists()   # no second name for course.grading


def test_a_grader_failure_costs_one_row_and_is_retried(tmp_path, monkeypatch):
    submissions = tmp_path / "submissions"
    (submissions / "b1").mkdir(parents=True)
    (submissions / "b2").mkdir()
    real = class_grading.grade

    def flaky(path, *args, **kwargs):
        if Path(path).name == "b1":
            raise RuntimeError("out of disk")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(class_grading, "grade", flaky)
    out = tmp_path / "grades"
    reports = class_grading.grade_class(submissions, out, names=["tv_loss"], progress=False)
    assert reports[0]["problem"] == "the grader failed: RuntimeError: out of disk"
    assert "holds neither a cs_utils/ folder nor .py files" in reports[1]["problem"]
    assert reports[0]["infrastructure_error"] and "infrastructure_error" not in reports[1]
    monkeypatch.setattr(class_grading, "grade", real)
    again = class_grading.grade_class(submissions, out, names=["tv_loss"], progress=False)
    assert "holds neither a cs_utils/ folder" in again[0]["problem"]     # b1 graded again, for real


def test_a_failure_of_the_grader_still_writes_the_table_and_the_json(tmp_path, monkeypatch, capsys):
    from cs_utils.instructor import grade as command

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(command, "grade", broken)
    out = tmp_path / "report.json"
    assert command.main([str(tmp_path), "--only", "tv_loss", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["points"] == 0
    assert report["problem"] == "the grader failed: OSError: no space left on device"
    assert "total: 0/1 points (1 exercises" in capsys.readouterr().out
