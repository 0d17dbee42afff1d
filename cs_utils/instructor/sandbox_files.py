"""What a grading sandbox holds: the copy of the project it runs (:func:`build_base`, the student
release of ``cs_utils``: no solutions, no golden files, no grader) and the system paths it binds
read-only (:func:`bound_paths`: the system's libraries, Python and its packages).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .release import instructor_only, strip_solutions

__all__ = ["PACKAGE_ROOT", "PROJECT_ROOT", "RUNNER", "bound_paths", "build_base"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the grader's cs_utils
PROJECT_ROOT = PACKAGE_ROOT.parent
RUNNER = Path(__file__).resolve().with_name("sandbox_runner.py")


def build_base(out: Path) -> Path:
    """Write the sandbox's copy of the project into ``out``: ``cs_utils/`` as in the student release
    (solutions stripped, no ``cs_utils/instructor/``), ``data/`` without the golden files, and the
    runner; readable by everyone, writable by its owner only. Returns ``out``."""
    out = Path(out)
    for src in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = src.relative_to(PACKAGE_ROOT)
        if instructor_only(Path("cs_utils") / rel):
            continue
        dst = out / "cs_utils" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(
            strip_solutions(src.read_text(encoding="utf-8"), f"cs_utils/{rel.as_posix()}"), encoding="utf-8"
        )
    data = PROJECT_ROOT / "data"
    if data.is_dir():
        shutil.copytree(data, out / "data", ignore=lambda d, names: ["checks"] if Path(d) == data else [])
    shutil.copy(RUNNER, out / "runner.py")
    for folder, _, files in os.walk(out):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return out


def bound_paths() -> list[str]:
    """What the sandbox needs read-only: the system's libraries, Python and its packages."""
    paths = [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/alternatives",
        "/etc/localtime",
    ]
    for prefix in {sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(os.path.realpath(prefix))
        paths.append(prefix)
    import numpy
    import torch

    for module in (numpy, torch):  # site-packages outside the prefixes (e.g. a user's site)
        paths.append(str(Path(module.__file__).resolve().parent.parent))
    seen, kept = set(), []
    for path in paths:
        if path not in seen and os.path.exists(path):
            seen.add(path)
            kept.append(path)
    return kept
