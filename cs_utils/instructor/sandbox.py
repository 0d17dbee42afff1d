"""The grading sandbox: a submission's code runs where it sees only its own files and its inputs.

One :class:`Sandbox` per submission starts :mod:`cs_utils.instructor.sandbox_runner` once (it imports
torch and the model once) and asks it for one exercise at a time; each exercise runs in a fresh
child process. The sandbox holds the *student release* of ``cs_utils`` (:func:`build_base`: no
solutions, no golden files, no grader), the submission's ``.py`` files and the inputs, never the
grader's package or expected outputs.

Two modes (:func:`isolation_mode`):

* ``bubblewrap`` (Debian's ``bubblewrap``, ``apt-get install bubblewrap``): a read-only file system
  with only the system's libraries, Python and its site-packages; a private writable scratch folder;
  no network; its own user (65534), PID and IPC namespaces, so killing the sandbox kills everything
  in it and nothing outlives it;
* ``fallback`` (no working ``bwrap``): hard limits (soft = hard) in each child, its own session
  killed on timeout, a scrubbed environment, a temporary working directory; the files of the
  grader's user stay readable and writable, so grade untrusted code with bubblewrap.

Results come back as ``.npz`` files in the scratch folder, read with :func:`read_case`: never
unpickled, size-checked, validated (numeric dtypes only).
"""

from __future__ import annotations

import functools
import io
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..course.report import one_line
from .release import instructor_only, strip_solutions

__all__ = [
    "CASE_STATUS",
    "BadResult",
    "CaseFile",
    "Sandbox",
    "SandboxError",
    "build_base",
    "isolation_mode",
    "read_case",
]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the grader's cs_utils
PROJECT_ROOT = PACKAGE_ROOT.parent
RUNNER = Path(__file__).resolve().with_name("sandbox_runner.py")
CASE_STATUS = {0: "ok", 1: "not implemented", 2: "error", 3: "fail", 4: "memory"}
MAX_RESULT_BYTES = 64 * 2**20
MAX_SCRATCH_BYTES = 512 * 2**20
MAX_SCRATCH_FILES = 2000
WATCH_SECONDS = 0.5
STARTUP_TIMEOUT = 300.0
SANDBOX_UID = 65534
IN_SANDBOX = Path("/sandbox")


class SandboxError(RuntimeError):
    """The sandbox could not be started (or did not answer as the runner does)."""


class BadResult(ValueError):
    """A result file that is missing, too large, not plain arrays or malformed."""


@functools.lru_cache(maxsize=1)
def isolation_mode() -> tuple[str, str]:
    """``("bubblewrap", why)`` when ``bwrap`` exists and can start a sandbox here, else ``("fallback", why)``.
    ``CS_UTILS_SANDBOX=fallback`` forces the fallback."""
    if os.environ.get("CS_UTILS_SANDBOX") == "fallback":
        return "fallback", "CS_UTILS_SANDBOX=fallback"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "fallback", "bwrap not found (apt-get install bubblewrap)"
    probe = subprocess.run(
        [
            bwrap,
            "--ro-bind",
            "/",
            "/",
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--die-with-parent",
            "--proc",
            "/proc",
            "true",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "fallback", f"bwrap cannot start a sandbox here: {probe.stderr.strip()[:200]}"
    return "bubblewrap", bwrap


def build_base(out: Path) -> Path:
    """Write the sandbox's copy of the project into ``out``: ``cs_utils/`` as in the student release
    (solutions stripped) without the instructor's tools, ``data/`` without the golden files, and the
    runner. Returns ``out``."""
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
    return out


def _kill_marked(token: str) -> None:
    """Kill every process whose environment holds ``token`` (the fallback's leftovers)."""
    needle = f"CS_UTILS_SANDBOX_TOKEN={token}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _bound_paths() -> list[str]:
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
    """Read a result file written in the sandbox: no pickles, no links, at most
    :data:`MAX_RESULT_BYTES` unpacked, only numeric arrays. Raises :class:`BadResult`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BadResult(f"no result file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if (
            not os.path.isfile(f"/proc/self/fd/{f.fileno()}")
            or os.fstat(f.fileno()).st_size > MAX_RESULT_BYTES
        ):
            raise BadResult("the result file is not a regular file or is too large")
        data = f.read()
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


class Sandbox:
    """One submission's sandbox: :meth:`run` one exercise at a time, :meth:`close` at the end."""

    def __init__(
        self,
        submission: Path,
        jobs: Path,
        base: Path,
        *,
        memory_mb: int,
        mode: str | None = None,
        max_processes: int = 64,
    ):
        self.submission, self.jobs, self.base = (Path(p).resolve() for p in (submission, jobs, base))
        self.memory_mb, self.max_processes = memory_mb, max_processes
        self.mode = mode or isolation_mode()[0]
        self.process = None
        self.scratch = Path(tempfile.mkdtemp(prefix="grade-scratch-"))
        self.token = uuid.uuid4().hex
        self._buffer = b""
        self.ready = None  # None: not started or not waited for; True: answering
        self.stopped = None

    def _command(self) -> tuple[list[str], str]:
        args = [str(self.memory_mb * 2**20), str(self.max_processes)]
        python = sys.executable
        if self.mode == "fallback":
            return (
                [
                    python,
                    "-I",
                    str(self.base / "runner.py"),
                    str(self.base),
                    str(self.submission),
                    str(self.jobs),
                    str(self.scratch),
                    *args,
                ],
                str(self.base / "cs_utils"),
            )
        bwrap = isolation_mode()[1]
        cmd = [
            bwrap,
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ]
        # The sandbox's own /tmp (in memory, at most 64 MB) comes first: the paths bound after it may
        # lie under the host's /tmp (a project cloned there, its .venv) and must stay visible.
        cmd += ["--size", str(64 * 2**20), "--tmpfs", "/tmp"]
        bound = _bound_paths()
        for path in bound:
            cmd += ["--ro-bind", path, path]
        for hidden in (PROJECT_ROOT, PACKAGE_ROOT):  # the grader's tree inside a bound prefix: cover it
            if any(Path(p) in hidden.parents or Path(p) == hidden for p in bound):
                cmd += ["--tmpfs", str(hidden)]
        cmd += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--ro-bind",
            str(self.base),
            str(IN_SANDBOX / "base"),
            "--ro-bind",
            str(self.submission),
            str(IN_SANDBOX / "submission"),
            "--ro-bind",
            str(self.jobs),
            str(IN_SANDBOX / "jobs"),
            "--bind",
            str(self.scratch),
            str(IN_SANDBOX / "scratch"),
            "--chdir",
            str(IN_SANDBOX / "scratch"),
            python,
            "-I",
            str(IN_SANDBOX / "base" / "runner.py"),
            str(IN_SANDBOX / "base"),
            str(IN_SANDBOX / "submission"),
            str(IN_SANDBOX / "jobs"),
            str(IN_SANDBOX / "scratch"),
            *args,
        ]
        return cmd, str(IN_SANDBOX / "base" / "cs_utils")

    def start(self) -> None:
        """Start the sandbox and wait until it is ready; raises :class:`SandboxError`."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the sandbox without waiting (:meth:`wait_ready` waits)."""
        cmd, self._expected = self._command()
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.scratch) if self.mode == "fallback" else "/tmp",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "CS_UTILS_FAST": "1",
            "CS_UTILS_SANDBOX_TOKEN": self.token,
        }
        self._stderr = open(self.scratch / "sandbox.log", "wb")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=self.scratch,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        expected = self._expected
        line = self._read_line(STARTUP_TIMEOUT)
        if line is None or not line.startswith("ready "):
            tail = (self.scratch / "sandbox.log").read_text(errors="replace").strip().splitlines()[-3:]
            self.close()
            raise SandboxError(f"the {self.mode} sandbox did not start: {' | '.join(tail)}")
        where = line.split(" ", 1)[1]
        if not where.startswith(expected + "/"):
            self.close()
            raise SandboxError(f"cs_utils in the sandbox is {where}, not the sandbox's copy under {expected}")
        self.cs_utils_file = where
        self.ready = True

    def _read_line(self, timeout: float, watch=None) -> str | None:
        """The zygote's next line, or None on timeout, end of output, or when ``watch()`` (called
        every :data:`WATCH_SECONDS`) returns a reason to stop (kept in ``self.stopped``)."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not sel.select(min(left, WATCH_SECONDS)):
                    if watch is not None and (why := watch()):
                        self.stopped = why
                        return None
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buffer += chunk
                if len(self._buffer) > 65536:
                    return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def run(self, name: str, timeout: float) -> tuple[str, float]:
        """Run exercise ``name``; ``(how, seconds)``: how is the child's exit ("0", "3", "signal9",
        "forkbomb"), "timeout" or "sandbox died". After a timeout or a death the sandbox is closed."""
        start = time.perf_counter()
        try:
            self.process.stdin.write(f"{name}\n".encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return "sandbox died", 0.0
        self.stopped = None
        deadline = time.monotonic() + timeout
        started = self._read_line(timeout, self._scratch_overflow)
        parts = (started or "").split(" ")
        if len(parts) != 3 or parts[:2] != ["started", name] or not parts[2].isdigit():
            self.close()
            return "sandbox died", time.perf_counter() - start
        child = int(parts[2])
        line = self._read_line(max(0.0, deadline - time.monotonic()), self._scratch_overflow)
        seconds = time.perf_counter() - start
        if line is None and self.mode == "fallback" and self.process.poll() is None:
            # Kill the child's session; the runner, a subreaper, then kills what the child left
            # (processes in other sessions included) and reports: nothing outlives the grader.
            try:
                os.killpg(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._read_line(10.0)
        if line is None:
            how = self.stopped or (
                "timeout" if self.process.poll() is None and seconds >= timeout * 0.99 else "sandbox died"
            )
            self.close()
            return how, seconds
        parts = line.split(" ")
        if len(parts) != 3 or parts[:2] != ["done", name]:
            self.close()
            return "sandbox died", seconds
        if parts[2] == "forkbomb":  # what is left of it may still be dying: start afresh
            self.close()
        return parts[2], seconds

    def _scratch_overflow(self) -> str | None:
        """"disk" once the scratch folder holds over :data:`MAX_SCRATCH_BYTES` or :data:`MAX_SCRATCH_FILES`"""
        total, count = 0, 0
        for folder, _, files in os.walk(self.scratch):
            for name in files:
                count += 1
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
            if total > MAX_SCRATCH_BYTES or count > MAX_SCRATCH_FILES:
                return "disk"
        return None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def result_path(self, name: str, case: int) -> Path:
        return self.scratch / name / f"case_{case}.npz"

    def log_tail(self, name: str, lines: int = 3) -> str:
        path = self.scratch / name / "log.txt"
        try:
            if path.is_symlink() or not path.is_file():
                return ""
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 4000))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def close(self, graceful: bool = False) -> None:
        """Stop the sandbox: kill it (``graceful``: first end its input, so the idle runner leaves)."""
        if self.process is not None:
            if graceful and self.ready and self.process.poll() is None:
                try:
                    self.process.stdin.close()
                    self.process.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._stderr.close()
            self.process = None
        if self.mode == "fallback":
            _kill_marked(self.token)

    def cleanup(self) -> None:
        self.close(graceful=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
