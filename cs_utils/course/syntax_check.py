"""Before ``make check`` and ``make submit``: every module compiles and every notebook is JSON.

::

    python cs_utils/course/syntax_check.py check|submit [--root PROJECT]

Run by path, with the standard library only: a module of ``cs_utils`` with a syntax error breaks
``import cs_utils`` itself, so this must not import the package. Prints one line per problem (file,
line, what Python says) and what to do, and exits 1; silent and 0 when all is well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main", "syntax_problems"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def syntax_problems(root: Path = PROJECT_ROOT) -> list[str]:
    """One line per file of ``root`` that Python or Jupyter could not read: a ``cs_utils/**/*.py``
    that does not compile, a ``notebooks/*.ipynb`` that is not JSON."""
    root = Path(root)
    problems = []
    for path in sorted((root / "cs_utils").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        try:
            compile(path.read_text(encoding="utf-8", errors="replace"), rel, "exec")
        except SyntaxError as exc:
            problems.append(f"{rel} line {exc.lineno}: {exc.msg}: {(exc.text or '').strip()[:80]}")
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        rel = path.relative_to(root).as_posix()
        try:
            json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except ValueError as exc:
            problems.append(f"{rel}: not a readable notebook ({exc}); undo the last edit made "
                            "outside Jupyter")
    return problems


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "check"
    root = Path(args[args.index("--root") + 1]) if "--root" in args else PROJECT_ROOT
    problems = syntax_problems(root)
    if not problems:
        return 0
    what = "submission.zip was not written" if command == "submit" else "nothing can be checked"
    print(f"error: {what}: Python cannot read these files (and neither can the grader):", file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    print(f"Fix them (an unfinished function can keep its `raise NotImplementedError`), then run "
          f"`make {command}` again.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
