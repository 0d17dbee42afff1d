"""Opening a submission: a folder or a ``.zip`` of the student's ``cs_utils/*.py`` files, copied into
the grader's work folder; files over 2 MB, submissions over 32 MB, links and unsafe names refused
with a :class:`SubmissionError` that says why.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from ..course import grading
from ..course.report import one_line

__all__ = ["MAX_FILE_BYTES", "MAX_SUBMISSION_BYTES", "SubmissionError", "find_package", "open_submission"]

MAX_FILE_BYTES = 2 * 2**20
MAX_SUBMISSION_BYTES = 32 * 2**20


class SubmissionError(ValueError):
    """A submission that cannot be opened: the reason is its message."""


def find_package(submission: Path) -> Path:
    """The submission's package folder: ``SUBMISSION/cs_utils`` if there is one, else ``SUBMISSION``."""
    submission = Path(submission)
    if not submission.is_dir():
        raise FileNotFoundError(f"{submission} is not a folder; give a student's cs_utils folder or project")
    if (submission / grading.PACKAGE).is_dir():
        return submission / grading.PACKAGE
    if any(submission.glob("*.py")):
        return submission
    raise FileNotFoundError(
        f"{submission} holds neither a {grading.PACKAGE}/ folder nor .py files; give a "
        "student's cs_utils folder or the project folder that contains it"
    )


def _safe_name(name: str) -> bool:
    return name.isidentifier() and len(name) < 64


def _from_zip(path: Path, out: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"not a readable zip file ({one_line(exc, 80)})") from None
    with zf:
        chosen = {}
        for info in zf.infolist():
            parts = info.filename.replace("\\", "/").split("/")
            if (
                info.is_dir()
                or ".." in parts
                or info.filename.startswith("/")
                or not parts[-1].endswith(".py")
            ):
                continue
            if len(parts) >= 2 and parts[-2] == grading.PACKAGE:
                depth = len(parts)
            elif len(parts) == 1:
                depth = 10**6  # loose .py files count only without a cs_utils/ folder
            else:
                continue
            stem = parts[-1][:-3]
            if _safe_name(stem) and (stem not in chosen or depth < chosen[stem][0]):
                chosen[stem] = (depth, info)
        total = 0
        for stem, (_, info) in sorted(chosen.items()):
            with zf.open(info) as member:
                data = member.read(MAX_FILE_BYTES + 1)
            total += len(data)
            if len(data) > MAX_FILE_BYTES or total > MAX_SUBMISSION_BYTES:
                raise SubmissionError(
                    f"{info.filename[:80]} is larger than {MAX_FILE_BYTES // 2**20} MB "
                    "unpacked (or the zip is too large)"
                )
            (out / f"{stem}.py").write_bytes(data)


def _from_folder(path: Path, out: Path) -> None:
    try:
        package = find_package(path)
    except FileNotFoundError as exc:
        raise SubmissionError(str(exc)) from None
    total = 0
    for src in sorted(package.glob("*.py")):
        if src.is_symlink() or not src.is_file() or not _safe_name(src.stem):
            continue
        size = src.stat().st_size
        total += size
        if size > MAX_FILE_BYTES or total > MAX_SUBMISSION_BYTES:
            raise SubmissionError(f"{src.name} is larger than {MAX_FILE_BYTES // 2**20} MB")
        shutil.copyfile(src, out / src.name)


def open_submission(submission: Path, out: Path) -> Path:
    """Copy the submission's ``cs_utils/*.py`` (regular files only) into the new folder ``out``;
    return it. Raises :class:`SubmissionError` with the reason when there is nothing to grade."""
    submission, out = Path(submission), Path(out)
    out.mkdir(parents=True, exist_ok=False)
    if submission.is_file() and submission.suffix == ".zip":
        _from_zip(submission, out)
    elif submission.is_dir():
        _from_folder(submission, out)
    else:
        raise SubmissionError(f"{submission.name} is neither a folder nor a .zip file")
    if not any(out.glob("*.py")):
        raise SubmissionError(f"no {grading.PACKAGE}/*.py files in the submission")
    return out
