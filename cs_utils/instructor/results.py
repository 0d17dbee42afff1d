"""Result files written in a sandbox, read as plain numbers: never unpickled, size-checked, only
numeric arrays, opened only as regular files (no link, no pipe)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..course.report import one_line
from .isolation import read_regular

__all__ = ["CASE_STATUS", "MAX_RESULT_BYTES", "BadResult", "CaseFile", "parse_case", "read_case"]

CASE_STATUS = {0: "ok", 1: "not implemented", 2: "error", 3: "fail", 4: "memory"}
MAX_RESULT_BYTES = 64 * 2**20


class BadResult(ValueError):
    """A result file that is missing, too large, not plain arrays or malformed."""


@dataclass
class CaseFile:
    """One case's result as the child reported it (validated)."""

    status: str
    message: str
    seconds: float
    outputs: dict


def _message(array: np.ndarray) -> str:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise BadResult("the message is not text")
    return bytes(array[:4000]).decode("utf-8", "replace")


def read_case(path: Path) -> CaseFile:
    """Read a result file written in the sandbox: a regular file (no link, no pipe), at most
    :data:`MAX_RESULT_BYTES`, only numeric arrays. Raises :class:`BadResult`."""
    path = Path(path)
    try:
        data = read_regular(path.parent, path.name, max_bytes=MAX_RESULT_BYTES)
    except OSError as exc:
        raise BadResult(f"no usable result file ({exc.strerror or exc})") from None
    return parse_case(data)


def parse_case(data: bytes) -> CaseFile:
    """The result held in ``data`` (the bytes of an ``.npz``); raises :class:`BadResult`."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > 256 or sum(i.file_size for i in infos) > MAX_RESULT_BYTES:
                raise BadResult("the result holds too many or too large arrays")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise BadResult(f"unexpected member {info.filename[:60]!r}")
                with zf.open(info) as member:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
    except BadResult:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is a bad result
        raise BadResult(f"the result file cannot be read as plain arrays ({type(exc).__name__})") from None
    try:
        status, seconds = arrays.pop("status"), arrays.pop("seconds")
        if (
            status.shape != ()
            or status.dtype.kind not in "iu"
            or seconds.shape != ()
            or seconds.dtype.kind != "f"
        ):
            raise TypeError("status and seconds must be one integer and one float")
        status = CASE_STATUS[int(status)]
        message = _message(arrays.pop("message"))
        seconds = float(seconds)
    except (KeyError, TypeError, ValueError, BadResult) as exc:
        raise BadResult(f"the result is malformed ({type(exc).__name__}: {one_line(exc, 80)})") from None
    outputs = {}
    for key, value in arrays.items():
        if not key.startswith("out/"):
            raise BadResult(f"unexpected array {key[:60]!r}")
        if value.dtype.kind not in "biuf":
            raise BadResult(f"the output {key[4:64]!r} has dtype {value.dtype}, not numbers")
        outputs[key[4:]] = value
    return CaseFile(status, message, seconds if np.isfinite(seconds) else 0.0, outputs)


