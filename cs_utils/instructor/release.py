"""The student release: the project with every solution replaced by ``raise NotImplementedError``.

::

    python -m cs_utils.instructor.release [--out build/student]      # or: make student

Copies the project (the files git knows: tracked plus untracked-but-not-ignored,
so never ``.venv/``, ``build/`` or caches; without git, a copy that skips those)
into the output folder. In every ``.py`` file and in every notebook code cell,
each region between the lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``
(nbgrader's markers) becomes, at the marker's indentation::

    # TODO: implement gram_matrix: Gram matrix of feature maps: (N, C, H, W) -> (N, C, C).
    raise NotImplementedError("gram_matrix (cs_utils/losses.py): write this function's body")

Everything else, notebooks included, is copied unchanged (notebooks keep their
JSON layout; only the marked cells' sources change), except what is the instructor's
(:func:`instructor_only`: the grader, the release, the renderer, the weight training, CI,
benchmarks, the grader's tests) and two files written for the student from
``cs_utils/instructor/templates/``: ``README.md`` (with the table of exercises from the
registry) and ``Makefile`` (``make lab``, ``check``, ``test``, ``submit``; see
:mod:`cs_utils.course.student`).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BEGIN", "END", "GIVEN_TESTS", "INSTRUCTOR_PACKAGE", "Region", "build_release", "exercise_table",
           "instructor_only", "marked_regions", "project_files", "question_table", "strip_solutions",
           "student_makefile", "student_readme"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = Path(__file__).resolve().with_name("templates")
#: The one folder of cs_utils that never ships: the grader, its reference and hidden cases, the release
#: and render tools, the training command lines. Everything else under cs_utils/ ships, solutions stripped.
INSTRUCTOR_PACKAGE = ("cs_utils", "instructor")
#: The tests the release keeps (``make test``): what the student did not write, foundation and plots.
GIVEN_TESTS = ("test_runtime.py", "test_data.py", "test_image.py", "test_hooks.py", "test_models.py",
               "test_labelled_images.py", "test_small_cnn.py", "test_history.py", "test_viz.py")
_TEST_SUPPORT = ("conftest.py", "models_by_hand.py")
_SKIP_DIRS = {".git", ".venv", "venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache",
              ".ipynb_checkpoints", "node_modules"}


@dataclass(frozen=True)
class Region:
    """Lines ``begin`` .. ``end`` (0-based, inclusive, the marker lines) of a source."""

    begin: int
    end: int
    indent: str


def marked_regions(lines: list[str], where: str = "source") -> list[Region]:
    """The marked regions of ``lines``; raises ``ValueError`` for unbalanced or nested markers."""
    regions, begin = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == BEGIN:
            if begin is not None:
                raise ValueError(f"{where} line {i + 1}: {BEGIN} inside another marked region")
            begin = i
        elif text == END:
            if begin is None:
                raise ValueError(f"{where} line {i + 1}: {END} without {BEGIN}")
            indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
            regions.append(Region(begin, i, indent))
            begin = None
    if begin is not None:
        raise ValueError(f"{where} line {begin + 1}: {BEGIN} without {END}")
    return regions


def _enclosing_function(lines: list[str], line_no: int):
    """``(name, first docstring line)`` of the innermost def around ``line_no``, if the source parses."""
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None, None
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.lineno <= line_no + 1 <= (node.end_lineno or node.lineno):
                if best is None or node.lineno > best.lineno:
                    best = node
    if best is None:
        return None, None
    doc = ast.get_docstring(best)
    return best.name, (doc.strip().splitlines()[0] if doc else None)


def _replacement(region: Region, name: str | None, doc: str | None, where: str) -> list[str]:
    if where.startswith("cs_utils/course/"):   # the instructor's tools: typical mistakes, not exercises
        message = f"{name or 'this part'} ({where}) is in the instructor's copy only"
        return [f"{region.indent}# (instructor's copy only)\n",
                f"{region.indent}raise NotImplementedError({json.dumps(message)})\n"]
    if name:
        todo = f"{region.indent}# TODO: implement {name}" + (f": {doc}" if doc else "")
        if len(todo) > 110:
            todo = todo[:106].rsplit(" ", 1)[0] + " ..."
        todo += "\n"
        message = f"{name} ({where}): write this function's body"
    else:
        todo = f"{region.indent}# TODO: implement the marked part of this cell\n"
        message = f"the exercise in {where} is not done yet: write the marked part"
    return [todo, f"{region.indent}raise NotImplementedError({json.dumps(message)})\n"]


def strip_solutions(source: str, where: str = "source") -> str:
    """``source`` with every marked region replaced by a TODO comment and ``raise NotImplementedError``."""
    lines = source.splitlines(keepends=True)
    regions = marked_regions(lines, where)
    if not regions:
        return source
    out, previous = [], 0
    for region in regions:
        name, doc = _enclosing_function(lines, region.begin)
        out += lines[previous:region.begin]
        out += _replacement(region, name, doc, where)
        previous = region.end + 1
    out += lines[previous:]
    text = "".join(out)
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text


def _strip_notebook(text: str, where: str) -> str:
    nb = json.loads(text)
    changed = False
    for k, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        joined = "".join(source) if isinstance(source, list) else source
        if BEGIN not in joined:
            continue
        stripped = strip_solutions(joined, f"{where}, cell {k}")
        cell["source"] = stripped.splitlines(keepends=True) if isinstance(source, list) else stripped
        changed = True
    if not changed:
        return text
    indent = 2 if re.match(r'\{\n  "', text) else 1  # nbformat writes indent 1 and sorted keys
    return json.dumps(nb, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"


def project_files(root: Path = ROOT) -> list[Path]:
    """Paths (relative to ``root``) of the project's files: git's tracked and unignored untracked
    files when ``root`` is a git work tree, else every file outside caches, build and venvs."""
    root = Path(root)
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        names = sorted({n for n in out.decode().split("\0") if n})
        return [Path(n) for n in names if (root / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not (set(rel.parts[:-1]) & _SKIP_DIRS) and not rel.name.endswith(".pyc") \
                    and not any(p.endswith(".egg-info") for p in rel.parts):
                files.append(rel)
        return files


def instructor_only(rel: Path) -> bool:
    """True for a project file (relative path) the release leaves out."""
    parts = Path(rel).parts
    if parts[0] in (".ci", "benchmarks") or rel.as_posix() in ("Makefile", "README.md"):
        return True
    if parts[:2] == INSTRUCTOR_PACKAGE:
        return True
    if parts[0] == "tests":
        return not (len(parts) == 2 and parts[1] in GIVEN_TESTS + _TEST_SUPPORT or parts[1] == "ipython")
    return False


def exercise_table(root: Path = ROOT) -> str:
    """The README's table of exercises, from the registry: function, file, notebook, where to check
    it (the notebook's check cell, else ``make check``), points."""
    from ..course import grading
    from ..course.student import exercise_notebooks

    notebooks = exercise_notebooks(root)
    rows = ["| function | file | notebook | check | points |", "| --- | --- | --- | --- | --- |"]
    for exercise in grading.EXERCISES.values():
        stem, has_check = notebooks.get(exercise.name, (None, False))
        notebook = f"`notebooks/{stem}.ipynb`" if stem else "-"
        check = f'`cs.check_exercise("{exercise.name}")`' if has_check else "`make check`"
        rows.append(f"| `{exercise.function}` | `{exercise.path}` | {notebook} | {check} | "
                    f"{exercise.points:g} |")
    return "\n".join(rows)


def question_table() -> str:
    """The README's table of written questions, from their registry: id, notebook, topic, points."""
    from ..course.questions import QUESTIONS

    rows = ["| question | notebook | about | points |", "| --- | --- | --- | --- |"]
    rows += [f"| `{q.id}` | `notebooks/{q.notebook}.ipynb` | {q.title} | {q.points} |"
             for q in QUESTIONS.values()]
    return "\n".join(rows)


def student_readme(root: Path = ROOT) -> str:
    """The release's README.md: the template with the exercises' and questions' counts, points and
    tables."""
    from ..course import grading
    from ..course.questions import QUESTIONS

    text = (TEMPLATES / "README.student.md").read_text(encoding="utf-8")
    points = sum(e.points for e in grading.EXERCISES.values())
    written = sum(q.points for q in QUESTIONS.values())
    return (text.replace("@COUNT@", str(len(grading.EXERCISES))).replace("@POINTS@", f"{points:g}")
            .replace("@EXERCISE_TABLE@", exercise_table(root))
            .replace("@QUESTION_COUNT@", str(len(QUESTIONS))).replace("@QUESTION_POINTS@", f"{written:g}")
            .replace("@QUESTION_TABLE@", question_table()))


def student_makefile() -> str:
    """The release's Makefile: the template with the given tests filled in."""
    text = (TEMPLATES / "Makefile.student").read_text(encoding="utf-8")
    return text.replace("@GIVEN_TESTS@", " ".join(f"tests/{name}" for name in GIVEN_TESTS))


def build_release(out: Path, root: Path = ROOT, *, verbose: bool = False) -> list[Path]:
    """Write the student release of ``root`` into ``out`` (emptied first); return the stripped files."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if out == root or (root in out.parents and out.relative_to(root).parts[0] not in _SKIP_DIRS):
        raise ValueError(f"the release folder {out} must be outside the project or under build/")
    if out.exists():
        shutil.rmtree(out)
    stripped = []
    for rel in project_files(root):
        if instructor_only(rel):
            continue
        src, dst = root / rel, out / rel
        if out in src.resolve().parents or src.resolve() == out:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.suffix in (".py", ".ipynb"):
            text = src.read_text(encoding="utf-8")
            new = strip_solutions(text, rel.as_posix()) if rel.suffix == ".py" else \
                _strip_notebook(text, rel.as_posix())
            dst.write_text(new, encoding="utf-8")
            shutil.copymode(src, dst)
            if new != text:
                stripped.append(rel)
                if verbose:
                    print(f"stripped {rel}")
        else:
            shutil.copy2(src, dst)
    (out / "README.md").write_text(student_readme(root), encoding="utf-8")
    (out / "Makefile").write_text(student_makefile(), encoding="utf-8")
    return stripped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cs_utils.instructor.release",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "student", help="default build/student")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this one)")
    args = parser.parse_args(argv)
    stripped = build_release(args.out, args.root, verbose=True)
    print(f"wrote the student release to {args.out} ({len(stripped)} files with exercises)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
