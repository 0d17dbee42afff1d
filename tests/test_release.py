"""The student release: solutions gone, every check FAILs naming the function, notebooks run up to it."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from cs_utils.course import grading
from cs_utils.instructor.release import (
    BEGIN,
    END,
    build_release,
    marked_regions,
    project_files,
    strip_solutions,
)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CS_UTILS_FAST": "1",
       "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "student"
    build_release(out, ROOT)
    return out


def _sources(path: Path) -> list[str]:
    """The code of a .py file, or each code cell of a notebook."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [path.read_text()]


def _solution_files() -> list[Path]:
    return [p for p in project_files(ROOT) if p.suffix in (".py", ".ipynb")
            and any(marked_regions(s.splitlines()) for s in _sources(ROOT / p))]


def test_strip_solutions_keeps_signature_and_docstring():
    source = "\n".join([
        "def double(x):",
        '    """Twice x."""',
        "    check(x)",
        "    " + BEGIN,
        "    y = x * 2",
        "    return y",
        "    " + END,
        "",
    ])
    assert strip_solutions(source, "cs_utils/m.py") == "\n".join([
        "def double(x):",
        '    """Twice x."""',
        "    check(x)",
        "    # TODO: implement double: Twice x.",
        '    raise NotImplementedError("double (cs_utils/m.py): write this function\'s body")',
        "",
    ])
    with pytest.raises(ValueError, match="without"):
        strip_solutions("    " + BEGIN + "\nx = 1\n", "m.py")


def test_release_has_the_project_without_build_or_venv(release):
    files = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
    assert {"Makefile", "README.md", "cs_utils/__init__.py", "cs_utils/course/grading.py"} <= files
    assert {f"data/checks/{name}.npz" for name in grading.EXERCISES} <= files
    assert not [f for f in files if f.startswith((".venv/", "build/", ".git/")) or "__pycache__" in f]


def test_no_solution_line_survives(release):
    solution_files = _solution_files()
    assert {Path("cs_utils/losses.py"), Path("cs_utils/saliency.py")} <= set(solution_files)
    for rel in solution_files:
        for solution, student in zip(_sources(ROOT / rel), _sources(release / rel)):
            lines = solution.splitlines()
            inside = set()
            for region in marked_regions(lines, str(rel)):
                inside.update(range(region.begin, region.end + 1))
            elsewhere = Counter(line.strip() for i, line in enumerate(lines) if i not in inside)
            in_release = Counter(line.strip() for line in student.splitlines())
            for i in sorted(inside):
                line = lines[i].strip()
                if line:
                    assert in_release[line] <= elsewhere[line], f"{rel}: solution line survives: {line!r}"
            assert not {BEGIN, END} & {line.strip() for line in student.splitlines()}
            assert student.count("raise NotImplementedError(") >= len(marked_regions(lines, str(rel)))


def test_notebooks_change_only_in_marked_cells(release):
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        solution = json.loads(path.read_text())
        student = json.loads((release / "notebooks" / path.name).read_text())
        assert len(solution["cells"]) == len(student["cells"])
        for a, b in zip(solution["cells"], student["cells"]):
            if not marked_regions("".join(a["source"]).splitlines()):
                assert a == b


@pytest.fixture(scope="module")
def kernel(release):
    """One Jupyter kernel on the release's cs_utils (fast budget, network blocked), shared by the tests."""
    from jupyter_client.manager import start_new_kernel

    env = {**ENV, "PYTHONPATH": str(release), "IPYTHONDIR": str(ROOT / "tests" / "ipython")}
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(release / "notebooks"))
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def _run(client, source: str) -> tuple[dict, str]:
    """Execute ``source``; return the reply's content and the printed text."""
    printed = []

    def keep(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            printed.append(msg["content"]["text"])

    reply = client.execute_interactive(source, timeout=300, output_hook=keep)
    return reply["content"], "".join(printed)


def test_every_check_fails_in_the_release_and_names_the_function(release, kernel):
    """The notebooks' check cells, run against the release's own cs_utils."""
    code = (
        "%reset -f\n"
        "import cs_utils, cs_utils.course.grading as g\n"
        "print(cs_utils.__file__)\n"
        "for name in g.exercise_names():\n"
        "    try:\n"
        "        g.check(name)\n"
        "    except AssertionError:\n"
        "        print('raised', name)\n"
    )
    reply, printed = _run(kernel, code)
    assert reply["status"] == "ok", reply
    lines = printed.splitlines()
    assert Path(lines[0]).resolve() == (release / "cs_utils" / "__init__.py").resolve()
    for name in grading.exercise_names():
        exercise = grading.get_exercise(name)
        fail = [line for line in lines if line.startswith(f"FAIL {name} ")]
        assert len(fail) == 1, (name, lines)
        assert fail[0].startswith(f"FAIL {name} (not implemented): ")
        assert f"write {exercise.function} in {exercise.path}" in fail[0]
        assert f"raised {name}" in lines


_FUNCTIONS = "|".join(sorted({e.function for e in grading.EXERCISES.values()}))
EXERCISE_CALL = re.compile(rf"(\b({_FUNCTIONS})|\bgrading\.check|\bcheck_exercise)\s*\(")


def _first_exercise_cell(cells: list[str]) -> int:
    """The first cell that calls an exercise function or a check (comments ignored)."""
    for i, source in enumerate(cells):
        code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
        if EXERCISE_CALL.search(code):
            return i
    return len(cells) - 1


def test_first_exercise_cell_is_found_by_calls_not_comments():
    cells = ["import cs_utils.grading  # cs.grading.check for the exercise", "x = 1",
             "y = cs.saliency_map (model, x, 3)", "cs_utils.grading.check('tv_loss')"]
    assert _first_exercise_cell(cells) == 2
    assert _first_exercise_cell(cells[:2] + cells[3:]) == 2


def test_release_notebooks_run_up_to_the_first_exercise(release, kernel):
    """Every cell before the first one that calls an exercise runs (a fresh namespace per notebook);
    that cell, or an earlier one that uses an exercise inside cs_utils, may only fail with the
    NotImplementedError of a marked function (or the FAIL of its check)."""
    notebooks = sorted((release / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        cells = _sources(path)
        assert _run(kernel, "%reset -f")[0]["status"] == "ok"
        for i, source in enumerate(cells[:_first_exercise_cell(cells) + 1]):
            reply, _ = _run(kernel, source)
            if reply["status"] == "error":
                where = f"{path.name} cell {i}: {reply['ename']}: {reply['evalue']}"
                assert reply["ename"] in ("NotImplementedError", "AssertionError"), where
                assert "write this function's body" in reply["evalue"] or "not implemented" in \
                    reply["evalue"] or "not done yet" in reply["evalue"], where
                break
