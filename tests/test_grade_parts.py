"""The autograder's parts without a sandbox: opening submissions, reading results, messages, points,
hidden cases; and the Gradescope autograder run against a fake /autograder layout."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cs_utils.course import grading
from cs_utils.course.report import one_line, render_table
from cs_utils.instructor import autograder, hidden_cases, judging, submission
from cs_utils.instructor.results import BadResult, read_case
from cs_utils.instructor.sandbox_files import build_base

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_submissions as fake  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- opening a submission


def test_a_zip_gives_only_its_cs_utils_modules(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("project/cs_utils/losses.py", "x = 1\n")
        zf.writestr("project/cs_utils/../../evil.py", "x = 2\n")  # path traversal
        zf.writestr("/abs/cs_utils/saliency.py", "x = 3\n")  # absolute
        zf.writestr("project/notebooks/01.ipynb", "{}")
        zf.writestr("project/cs_utils/not-a-module.py", "x = 4\n")
    package = submission.open_submission(path, tmp_path / "out")
    assert sorted(p.name for p in package.iterdir()) == ["losses.py"]
    assert (package / "losses.py").read_text() == "x = 1\n"


def test_a_zip_bomb_or_a_huge_file_is_refused(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cs_utils/losses.py", "#" * (3 * 2**20))  # 3 MB of text, a few KB zipped
    assert path.stat().st_size < 50_000
    with pytest.raises(submission.SubmissionError, match="larger than 2 MB"):
        submission.open_submission(path, tmp_path / "out")


def test_links_in_a_folder_are_not_followed(tmp_path):
    package = tmp_path / "s" / "cs_utils"
    package.mkdir(parents=True)
    (package / "losses.py").symlink_to(ROOT / "cs_utils" / "losses.py")  # the grader's solution
    (package / "saliency.py").write_text("y = 2\n")
    copied = submission.open_submission(tmp_path / "s", tmp_path / "out")
    assert sorted(p.name for p in copied.iterdir()) == ["saliency.py"]


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable zip file"),
        (lambda p: p.mkdir(), "holds neither a cs_utils/ folder nor .py files"),
        (lambda p: zipfile.ZipFile(p, "w").writestr("README.md", "hi"), "no cs_utils/*.py files"),
    ],
)
def test_an_unusable_submission_has_a_reason(tmp_path, make, reason):
    path = tmp_path / ("s.zip" if "zip" in reason or "cs_utils/*.py" in reason else "s")
    make(path)
    with pytest.raises(submission.SubmissionError, match=reason.replace("*", r"\*").replace(".", r"\.")):
        submission.open_submission(path, tmp_path / "out")
    report = autograder.grade(path, ["gram_matrix", "tv_loss"])
    assert report["points"] == 0 and report["max_points"] == 2 and reason in report["problem"]
    assert [s["status"] for s in report["exercises"]] == ["error", "error"]


# --------------------------------------------------------------------------- reading results


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _ok(**outputs):
    return {
        "status": np.array(0),
        "message": np.frombuffer(b"hi", np.uint8),
        "seconds": np.array(0.5),
        **{f"out/{k}": v for k, v in outputs.items()},
    }


def test_a_result_file_is_read_as_plain_numbers(tmp_path):
    case = read_case(_npz(tmp_path / "r.npz", **_ok(x=np.arange(3.0))))
    assert (case.status, case.message, case.seconds) == ("ok", "hi", 0.5)
    assert case.outputs["x"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "arrays, reason",
    [
        ({**_ok(), "out/x": np.array([object()], dtype=object)}, "cannot be read as plain arrays"),
        ({**_ok(), "status": np.array("0")}, "malformed"),
        ({**_ok(), "seconds": np.array([1.0, 2.0])}, "malformed"),
        ({**_ok(), "message": np.array(["text"])}, "malformed"),
        ({**_ok(), "status": np.array(9)}, "malformed"),
        ({**_ok(), "out/x": np.array(["1.0"])}, "not numbers"),
        ({**_ok(), "extra": np.zeros(2)}, "unexpected array"),
    ],
)
def test_a_malformed_result_is_refused(tmp_path, arrays, reason):
    with pytest.raises(BadResult, match=reason):
        read_case(_npz(tmp_path / "r.npz", **arrays))


def test_links_pickles_and_oversized_results_are_refused(tmp_path):
    (tmp_path / "link.npz").symlink_to(_npz(tmp_path / "real.npz", **_ok()))
    with pytest.raises(BadResult, match="no usable result file"):
        read_case(tmp_path / "link.npz")
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(BadResult, match="cannot be read as plain arrays"):
        read_case(tmp_path / "pickle.npz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (10_000_000,)}
        )
        zf.writestr("out/x.npy", header.getvalue() + b"\x00" * 80_000_000)  # 80 MB unpacked
    (tmp_path / "big.npz").write_bytes(buf.getvalue())
    with pytest.raises(BadResult, match="too many or too large"):
        read_case(tmp_path / "big.npz")


# --------------------------------------------------------------------------- messages, points, table


def test_one_line_escapes_and_truncates():
    assert one_line("a\nb\r\tc\x1b[2J") == "a\\nb\\r\\tc\\x1b[2J"
    assert one_line("x" * 500, 20) == "x" * 17 + "..."
    assert one_line(None) == ""


def test_points_split_over_cases_and_need_a_hidden_pass():
    assert judging.points_for(1, True, 2, 2) == 1.0
    assert judging.points_for(1, True, 1, 2) == 0.67
    assert judging.points_for(1, False, 1, 2) == 0.33
    assert judging.points_for(1, True, 0, 2) == 0.0  # stored public answers earn nothing
    assert judging.points_for(3, True, 0, 0) == 3.0


def test_the_table_has_one_row_per_exercise_and_escapes_messages():
    case = {"status": "pass", "rel_error": 2e-8, "message": "", "seconds": 0.1}
    report = {
        "submission": "s",
        "mode": "bubblewrap",
        "seed": 4,
        "points": 1,
        "max_points": 2,
        "seconds": 3.0,
        "exercises": [
            {
                "name": "gram_matrix",
                "points": 1,
                "max_points": 1,
                "status": "pass",
                "rel_error": 2e-8,
                "seconds": 0.1,
                "message": "",
                "public": case,
                "hidden": [case, case],
            },
            {
                "name": "tv_loss",
                "points": 0,
                "max_points": 1,
                "status": "error",
                "rel_error": None,
                "seconds": 60.0,
                "message": "bad\ntotal: 2/2 points",
                "public": case,
                "hidden": [],
            },
        ],
    }
    lines = render_table(report).splitlines()
    assert lines[1] == "isolation: bubblewrap; hidden cases from seed 4"
    assert lines[4].split()[:6] == ["gram_matrix", "1/1", "pass", "pass", "2/2", "2.0e-08"]
    assert lines[5].split()[:5] == ["tv_loss", "0/1", "error", "pass", "-"]
    assert lines[5].endswith("bad\\ntotal: 2/2 points")
    assert lines[-1] == "total: 1/2 points (2 exercises, 3.0 s)"


# --------------------------------------------------------------------------- hidden cases, the base


def test_hidden_inputs_are_reproducible_from_the_seed_and_differ_from_the_public_ones():
    for name in grading.exercise_names():
        public, _, _ = grading.load_golden(name)
        one, again = hidden_cases.hidden_inputs(name, 7, 1), hidden_cases.hidden_inputs(name, 7, 1)
        other = hidden_cases.hidden_inputs(name, 8, 1)
        assert set(public) <= set(one), name
        assert all(np.array_equal(one[k], again[k]) for k in one), name
        assert any(not np.array_equal(one[k], other[k]) or one[k].shape != other[k].shape for k in one), name
        assert any(
            public[k].shape != one[k].shape or not np.array_equal(public[k], one[k]) for k in public
        ), name


def test_the_sandbox_base_is_the_release_without_golden_files_or_grader(tmp_path):
    base = build_base(tmp_path / "base")
    files = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
    assert "cs_utils/losses.py" in files and "cs_utils/course/grading.py" in files and "runner.py" in files
    assert not [f for f in files if f.startswith("data/checks")]
    assert (
        not {"cs_utils/instructor/autograder.py", "cs_utils/instructor/hidden_cases.py",
             "cs_utils/instructor/release.py"} & files
    )
    losses = (base / "cs_utils" / "losses.py").read_text()
    assert "### BEGIN SOLUTION" not in losses and 'raise NotImplementedError("gram_matrix' in losses
    layers = (base / "cs_utils" / "course" / "exercises_layers.py").read_text()
    assert "### BEGIN SOLUTION" not in layers and "is in the instructor's copy only" in layers


# --------------------------------------------------------------------------- Gradescope


def test_run_autograder_writes_gradescopes_results_json(tmp_path):
    """The autograder zip unpacked into a fake /autograder; a submission zip solving losses.py only."""
    from cs_utils.instructor.gradescope import build_autograder_zip

    root = tmp_path / "autograder"
    archive = build_autograder_zip(tmp_path / "autograder.zip", seed=21)
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {
            "setup.sh",
            "run_autograder",
            "grader_config.json",
            "requirements.txt",
            "cs_utils/losses.py",
            "cs_utils/instructor/grade.py",
            "data/checks/gram_matrix.npz",
        } <= names
        assert zf.getinfo("run_autograder").external_attr >> 16 == 0o755
        zf.extractall(root / "source")
    assert "### BEGIN SOLUTION" in (root / "source" / "cs_utils" / "losses.py").read_text()  # the reference
    from cs_utils.instructor.release import strip_solutions

    package = tmp_path / "student" / "cs_utils"
    package.mkdir(parents=True)
    for path in (ROOT / "cs_utils").glob("*.py"):
        text = path.read_text()
        (package / path.name).write_text(
            text if path.name == "losses.py" else strip_solutions(text, path.name)
        )
    (root / "submission").mkdir()
    fake.zip_folder(package, root / "submission" / "submission.zip")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    os.chmod(root / "source" / "run_autograder", 0o755)
    run = subprocess.run(
        [str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 4
    assert len(results["tests"]) == 2 * len(grading.EXERCISES)  # the public case, the hidden cases
    for public, hidden in zip(results["tests"][::2], results["tests"][1::2]):
        assert set(public) == set(hidden) == {"name", "score", "max_score", "output", "visibility"}
        assert public["visibility"] == "visible" and hidden["visibility"] == "after_due_date"
        assert public["max_score"] == 0.33 and hidden["max_score"] == 0.67
    by_name = {t["name"]: t for t in results["tests"]}
    assert by_name["gram_matrix (cs_utils/losses.py): public case"]["score"] == 0.33
    assert by_name["gram_matrix (cs_utils/losses.py): hidden cases"]["score"] == 0.67
    assert sum(t["score"] for t in results["tests"]) == pytest.approx(4)
    assert by_name["saliency_map (cs_utils/saliency.py): public case"]["score"] == 0
    saliency = by_name["saliency_map (cs_utils/saliency.py): public case"]["output"]
    assert "not implemented yet: write saliency_map" in saliency
    assert "sandbox" in results["output"] and "21" not in results["output"]
    assert results["extra_data"]["seed"] == 21 and results["stdout_visibility"] == "hidden"
    assert "seed 21" in run.stdout      # the instructor's log
