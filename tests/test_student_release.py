"""The student's side of the release: its README and Makefile, `make check`, `make submit` graded by
the class grader and on Gradescope, and notebooks that pick up an edited function without a restart.

One release is built for the module; `make` runs there with this Python (``PY=``), so no venv is made.
"""

import ast
import csv
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from cs_utils.course import grading
from cs_utils.course.questions import QUESTIONS
from cs_utils.instructor import autograder, gradescope
from cs_utils.instructor.class_grading import grade_class
from cs_utils.instructor.release import GIVEN_TESTS, build_release, strip_solutions

ROOT = Path(__file__).resolve().parent.parent
NAMES = grading.exercise_names()
FILLED = "gram_matrix"  # the exercise the tests write in, from the solution
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MAKE", "MFLAGS"))}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CS_UTILS_FAST="1", MPLBACKEND="Agg")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student-release") / "student"
    build_release(out, ROOT)
    return out


def make(folder: Path, target: str) -> subprocess.CompletedProcess:
    """``make TARGET`` in ``folder`` with this Python and the folder's own cs_utils."""
    return subprocess.run(["make", "--no-print-directory", target, f"PY={sys.executable}"], cwd=folder,
                          env={**ENV, "PYTHONPATH": str(folder)}, capture_output=True, text=True, timeout=600)


def rows(table: str) -> dict[str, str]:
    """The table's row of every exercise, by name (the summary below it is indented)."""
    return {line.split()[0]: line for line in table.splitlines()
            if line[:1].isalpha() and line.split()[0] in NAMES}


def function_lines(path: Path, name: str) -> tuple[list[str], int, int]:
    """The lines of ``path`` and where its top-level function ``name`` starts and ends (0-based,
    end excluded)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    tree = ast.parse("".join(lines))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    return lines, start, node.end_lineno


def written(release: Path, name: str) -> bool:
    """Whether exercise ``name`` of the release has a body (no longer raises NotImplementedError)."""
    exercise = grading.get_exercise(name)
    lines, a, b = function_lines(release / exercise.path, exercise.function)
    return "raise NotImplementedError(" not in "".join(lines[a:b])


def fill_in(release: Path, name: str) -> None:
    """Write the solution's version of exercise ``name`` into the release, as a student would."""
    exercise = grading.get_exercise(name)
    solution, a, b = function_lines(ROOT / exercise.path, exercise.function)
    target = release / exercise.path
    student, c, d = function_lines(target, exercise.function)
    target.write_text("".join(student[:c] + solution[a:b] + student[d:]), encoding="utf-8")


# --------------------------------------------------------------------------- what the release holds


def test_readme_is_the_students_with_the_exercises_from_the_registry(release):
    readme = (release / "README.md").read_text()
    for instructor in ("make student", "make checks", "make gradescope", "make weights", "golden",
                       "For instructors", "instructor.grade", "hidden_cases"):
        assert instructor not in readme, instructor
    for command in ("make lab", "make check", "make submit", "CS_UTILS_FAST=1", "autoreload",
                    "## When a check fails"):
        assert command in readme, command
    table = [line for line in readme.splitlines() if line.startswith("| `") and "| `q0" not in line]
    assert len(table) == len(NAMES)
    for line, name in zip(table, NAMES):
        exercise = grading.get_exercise(name)
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"`{exercise.function}`" and cells[1] == f"`{exercise.path}`", line
        assert cells[4] == f"{exercise.points:g}", line
        assert re.fullmatch(r"`notebooks/0\d_\w+\.ipynb`", cells[2]), line
        assert cells[3] in (f'`cs.check_exercise("{name}")`', "`make check`"), line
    assert '`cs.check_exercise("saliency_map")` | 1 |' in readme
    assert f"{sum(grading.get_exercise(n).points for n in NAMES):g} points in all" in readme
    questions = [line for line in readme.splitlines() if line.startswith("| `q0")]
    assert questions == [f"| `{q.id}` | `notebooks/{q.notebook}.ipynb` | {q.title} | {q.points} |"
                         for q in QUESTIONS.values()]
    assert f"{sum(q.points for q in QUESTIONS.values())} points, graded by hand" in readme


def test_release_ships_no_instructor_tools_targets_or_tests(release):
    course = {p.name for p in (release / "cs_utils" / "course").iterdir() if p.suffix == ".py"}
    assert course == {"__init__.py", "grading.py", "exercise_registry.py", "exercises_attribution.py",
                      "exercises_layers.py", "exercises_losses.py", "exercises_pixels.py", "questions.py",
                      "report.py", "student.py", "submission_pdf.py", "syntax_check.py"}
    assert not (release / "cs_utils" / "instructor").exists()
    assert {p.name for p in (release / "data" / "checks").glob("*.npz")} == {f"{n}.npz" for n in NAMES}
    assert not (release / ".ci").exists() and not (release / "benchmarks").exists()
    assert not (release / "cs_utils" / "instructor" / "templates").exists()
    tests = {p.name for p in (release / "tests").iterdir() if p.is_file()}
    assert tests == {*GIVEN_TESTS, "conftest.py", "models_by_hand.py"}
    makefile = (release / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    assert targets == {"help", "setup", "lab", "check", "test", "submit", "clean"}
    for test in GIVEN_TESTS:
        assert f"tests/{test}" in makefile
        source = (ROOT / "tests" / test).read_text()
        used = {e.function for e in grading.EXERCISES.values() if re.search(rf"\b{e.function}\b", source)}
        assert not used, f"{test} uses the exercises {used}: it cannot pass in the release"


def test_every_notebook_loads_autoreload_in_its_first_code_cell():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 6
    for path in notebooks:
        first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "".join(first["source"]).startswith("%load_ext autoreload\n%autoreload 2\n"), path.name


# --------------------------------------------------------------------------- make check, make submit


def test_make_check_fails_naming_each_function_until_one_is_written(release):
    before = make(release, "check")
    assert before.returncode != 0
    table = rows(before.stdout)
    assert list(table) == NAMES
    for name, row in table.items():
        exercise = grading.get_exercise(name)
        assert "0/1  not implemented" in row and f"write {exercise.function} in {exercise.path}" in row, row
    assert f"total: 0/{len(NAMES)} points" in before.stdout
    assert f"0/{len(NAMES)} exercises pass; still to do ({len(NAMES)}):" in before.stdout
    assert re.search(r"^  saliency_map +in cs_utils/saliency.py +\(notebook 02_saliency_and_occlusion\): "
                     "not implemented$", before.stdout, flags=re.M)
    assert f"0/{len(QUESTIONS)} written questions answered" in before.stdout
    listed = re.findall(r"^  (q0\d_\w+) +in notebook (\S+) \((\d+) points\): ", before.stdout, flags=re.M)
    assert listed == [(q.id, q.notebook, str(q.points)) for q in QUESTIONS.values()]

    assert not written(release, FILLED)
    fill_in(release, FILLED)
    assert written(release, FILLED)
    after = make(release, "check")
    assert after.returncode != 0
    table = rows(after.stdout)
    assert re.search(rf"^{FILLED} +1/1  pass +pass +- +\d\.\de-\d\d", table[FILLED])
    assert [n for n, row in table.items() if " pass " in row] == [FILLED]
    assert "0/1  not implemented" in table["style_loss"]  # the next one in losses.py: still to write
    assert f"total: 1/{len(NAMES)} points" in after.stdout
    assert f"1/{len(NAMES)} exercises pass; still to do ({len(NAMES) - 1}):" in after.stdout


def test_make_submit_refuses_a_syntax_error(release, tmp_path):
    copy = tmp_path / "student"
    shutil.copytree(release, copy, ignore=shutil.ignore_patterns("__pycache__", "submission.zip"))
    path = copy / "cs_utils" / "saliency.py"
    path.write_text(path.read_text() + "\ndef unfinished(x:\n")
    lines = len(path.read_text().splitlines())
    run = make(copy, "submit")
    assert run.returncode != 0
    assert "error: submission.zip was not written" in run.stderr
    assert f"cs_utils/saliency.py line {lines}: " in run.stderr
    assert "then run `make submit` again" in run.stderr
    assert not (copy / "submission.zip").exists()


def test_make_submit_zip_is_what_the_class_grader_and_gradescope_score(release, tmp_path, monkeypatch):
    if not written(release, FILLED):
        fill_in(release, FILLED)  # when run alone
    (release / "submission.zip").unlink(missing_ok=True)
    run = make(release, "submit")
    assert run.returncode == 0, run.stderr
    assert f"total: 1/{len(NAMES)} points" in run.stdout
    size = (release / "submission.zip").stat().st_size
    modules = sorted({grading.get_exercise(n).path for n in NAMES})
    notebooks = sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb"))
    counts = f"{len(modules) + len(notebooks)} files \\({len(modules)} modules, {len(notebooks)} notebooks\\)"
    assert re.search(rf"wrote submission.zip: {counts}, {round(size / 1024)} KiB", run.stdout), run.stdout
    with zipfile.ZipFile(release / "submission.zip") as zf:
        names = sorted(zf.namelist())
    assert names == sorted(modules + notebooks)
    pages = json.loads((release / "submission_pages.json").read_text())
    from pypdf import PdfReader

    assert len(PdfReader(release / "submission.pdf").pages) == pages["pages"] > len(QUESTIONS)
    assert list(pages["questions"]) == list(QUESTIONS)
    assert re.search(rf"wrote submission.pdf: {pages['pages']} pages in [\d.]+ s", run.stdout), run.stdout

    graded = [FILLED, "content_loss"]  # one written, one not
    classroom = tmp_path / "class"
    classroom.mkdir()
    shutil.copy(release / "submission.zip", classroom / "s001.zip")
    (report,) = grade_class(classroom, tmp_path / "grades", names=graded, hidden=1, jobs=1, progress=False)
    assert [(s["name"], s["points"], s["status"]) for s in report["exercises"]] == [
        (FILLED, 1.0, "pass"), ("content_loss", 0.0, "not implemented")]
    with open(tmp_path / "grades" / "grades.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["student_id"] == "s001" and float(row["score"]) == 1.0

    # Gradescope unpacks the upload into /autograder/submission
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    (root / "source" / "grader_config.json").write_text(json.dumps({"seed": 3, "exercises": graded}) + "\n")
    with zipfile.ZipFile(release / "submission.zip") as zf:
        zf.extractall(root / "submission")
    monkeypatch.setattr(gradescope, "grade", functools.partial(autograder.grade, hidden=1))
    results = gradescope.run(root)
    assert results["score"] == 1.0
    assert [(t["name"], t["score"]) for t in results["tests"]] == [
        (f"{FILLED} (cs_utils/losses.py): public case", 0.5),
        (f"{FILLED} (cs_utils/losses.py): hidden cases", 0.5),
        ("content_loss (cs_utils/losses.py): public case", 0.0),
        ("content_loss (cs_utils/losses.py): hidden cases", 0.0)]
    assert results["extra_data"]["seed"] == 3


# --------------------------------------------------------------------------- autoreload


def test_a_notebook_picks_up_an_edited_function_without_a_restart(release, tmp_path):
    """The first cell of notebook 02 in a kernel on a copy of the release; gram_matrix is called,
    written into the file, and called again in the same kernel."""
    from jupyter_client.manager import start_new_kernel

    copy = tmp_path / "student"
    shutil.copytree(release / "cs_utils", copy / "cs_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(release / "data", copy / "data")
    (copy / "notebooks").mkdir()
    losses = copy / "cs_utils" / "losses.py"
    losses.write_text(strip_solutions((ROOT / "cs_utils" / "losses.py").read_text(), "cs_utils/losses.py"))
    notebook = json.loads((release / "notebooks" / "02_saliency_and_occlusion.ipynb").read_text())
    first = "".join(next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"])
    call = ("import torch\n"
            "try:\n"
            "    print('result', cs.gram_matrix(torch.arange(8.0).reshape(1, 2, 2, 2)).tolist())\n"
            "except NotImplementedError as exc:\n"
            "    print('not implemented:', exc)\n")
    env = {**ENV, "PYTHONPATH": str(copy), "IPYTHONDIR": str(ROOT / "tests" / "ipython")}
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(copy / "notebooks"))
    try:
        def run(source):
            printed = []

            def keep(msg):
                if msg["msg_type"] == "stream":
                    printed.append(msg["content"]["text"])

            reply = client.execute_interactive(source, timeout=300, output_hook=keep)
            assert reply["content"]["status"] == "ok", reply["content"]
            return "".join(printed)

        run(first)
        assert run(call).startswith("not implemented: gram_matrix (cs_utils/losses.py)")
        fill_in(copy, FILLED)
        stamp = time.time() + 2
        os.utime(losses, (stamp, stamp))
        import torch

        from cs_utils.losses import gram_matrix

        expected = gram_matrix(torch.arange(8.0).reshape(1, 2, 2, 2)).tolist()
        assert run(call).strip() == f"result {expected}"
        assert expected == [[[1.75, 4.75], [4.75, 15.75]]]  # F F^T / (C H W)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
