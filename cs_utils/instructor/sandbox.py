"""The grading sandbox: a submission's code runs where it sees only its own files and its inputs.

One :class:`Sandbox` per submission starts :mod:`cs_utils.instructor.sandbox_runner` once (it imports
torch and the model once) and asks it for one exercise at a time, each in a fresh child process.
The sandbox holds the *student release* of ``cs_utils``
(:mod:`~cs_utils.instructor.sandbox_files`: no solutions, no golden files, no grader), the
submission's ``.py`` files and the inputs, never the grader's package or expected outputs.

Two modes (:func:`isolation_mode`), the report says which and as whom:

* ``bubblewrap`` (Debian's ``bubblewrap``, ``apt-get install bubblewrap``): a read-only file system
  with only the system's libraries, Python and its site-packages; a private writable scratch folder;
  a private, size-limited ``/tmp`` and ``/dev/shm``; no network; its own user (65534 inside), PID and
  IPC namespaces, so killing the sandbox kills everything in it and nothing outlives it;
* ``fallback`` (no working ``bwrap``, e.g. in a Docker container such as Gradescope's): hard limits
  (soft = hard) in each child, its own session killed on timeout, a scrubbed environment. Allowed
  only as root, because the submission then runs as a sandbox account that cannot read or write the
  grader's files (:mod:`~cs_utils.instructor.isolation`).

As root, in both modes, the submission's processes run as the dedicated account ``cs-sandbox<slot>``
(no supplementary groups), in their own cgroup where the machine has one (memory with tmpfs, process
count, one CPU); what the account left in ``/tmp``, ``/dev/shm`` or System V IPC is removed after
each exercise.

Results come back as ``.npz`` files in the scratch folder, read by :mod:`~cs_utils.instructor.results`:
never unpickled, size-checked, validated (numeric dtypes only).
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .cgroups import Cgroup, cgroup_support
from .isolation import (
    Account,
    IsolationError,
    account_slot,
    account_usage,
    count_tree,
    drop_to,
    hidden_memory,
    open_python_to,
    python_paths,
    read_regular,
    remove_tree,
    sandbox_account,
    sweep_account,
)
from .results import MAX_RESULT_BYTES, BadResult, CaseFile, parse_case
from .sandbox_files import PACKAGE_ROOT, PROJECT_ROOT, bound_paths

__all__ = ["Sandbox", "SandboxError", "isolation_mode"]

MAX_SCRATCH_BYTES = 512 * 2**20
MAX_SCRATCH_FILES = 2000
MAX_SCRATCH_DEPTH = 32
PRIVATE_TMP_BYTES = 64 * 2**20
#: Memory a sandbox may take before its runner is ready (torch and the model), beyond the limit.
STARTUP_MEMORY = 3 * 2**30
WATCH_SECONDS = 0.5
STARTUP_TIMEOUT = 300.0
SANDBOX_UID = 65534
IN_SANDBOX = Path("/sandbox")


class SandboxError(RuntimeError):
    """The sandbox could not be started (or did not answer as the runner does)."""


def _bwrap_probe(bwrap: str, account: Account | None) -> subprocess.CompletedProcess:
    cmd = [*drop_to(account), bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
           "--die-with-parent", "--proc", "/proc", "--dev", "/dev"]
    for path in bound_paths():
        cmd += ["--ro-bind", path, path]
    cmd += [sys.executable, "-I", "-c", "import numpy"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@functools.lru_cache(maxsize=1)
def isolation_mode() -> tuple[str, str]:
    """``("bubblewrap", bwrap)`` when ``bwrap`` can start a sandbox here (as the sandbox account when
    the grader is root), else ``("fallback", why)`` as root; raises :class:`IsolationError` when
    neither is safe (not root and no bubblewrap). ``CS_UTILS_SANDBOX=fallback`` forces the fallback.
    The probe runs as a slot's account that no other grader holds, whose sweeps would kill it."""
    forced = os.environ.get("CS_UTILS_SANDBOX") == "fallback"
    bwrap = shutil.which("bwrap")
    why = "CS_UTILS_SANDBOX=fallback" if forced else "bwrap not found (apt-get install bubblewrap)"
    with account_slot() as slot:
        account = sandbox_account(slot)
        open_python_to(account, python_paths())
        probe = _bwrap_probe(bwrap, account) if bwrap is not None and not forced else None
    if probe is not None and probe.returncode == 0:
        return "bubblewrap", bwrap
    if probe is not None:
        why = f"bwrap cannot start a sandbox here: {probe.stderr.strip()[:200]}"
    if account is None:
        raise IsolationError(
            f"no safe sandbox: {why}; outside bubblewrap the grader must run as root, so that the "
            "submission runs as a sandbox account that cannot touch the grader's files"
        )
    return "fallback", why


class Sandbox:
    """One submission's sandbox: :meth:`run` one exercise at a time, :meth:`close` at the end.

    ``slot`` picks the sandbox account (``cs-sandbox<slot>``): sandboxes running at once need
    different slots. Its folders: a root-owned holder (enterable only), inside it the scratch folder
    (the account's, mode 0700) and the runner's log (root's)."""

    def __init__(
        self,
        submission: Path,
        jobs: Path,
        base: Path,
        *,
        memory_mb: int,
        mode: str | None = None,
        max_processes: int = 64,
        slot: int = 0,
    ):
        self.submission, self.jobs, self.base = (Path(p).resolve() for p in (submission, jobs, base))
        self.memory_mb, self.max_processes = memory_mb, max_processes
        self.mode = mode or isolation_mode()[0]
        self.account = sandbox_account(slot)
        if self.mode == "fallback" and self.account is None:
            raise IsolationError("the fallback sandbox runs only as root (as a sandbox account): "
                                 "install bubblewrap or grade as root")
        self.process = None
        self.holder = Path(tempfile.mkdtemp(prefix="grade-sandbox-"))
        os.chmod(self.holder, 0o711)
        self.scratch = self.holder / "scratch"
        self.scratch.mkdir(mode=0o700)
        if self.account is not None:
            os.chown(self.scratch, self.account.uid, self.account.gid)
        self.log_path = self.holder / "sandbox.log"
        self.token = uuid.uuid4().hex
        self.cgroup = None
        self.limits = None
        self._buffer = b""
        self.ready = None  # None: not started or not waited for; True: answering
        self.stopped = None

    @property
    def uid(self) -> int:
        """The uid the submission's processes run as, seen from outside the sandbox."""
        return self.account.uid if self.account is not None else os.getuid()


    def _command(self) -> tuple[list[str], str]:
        args = [str(self.memory_mb * 2**20), str(self.max_processes)]
        python = sys.executable
        if self.mode == "fallback":
            return (
                [python, "-I", str(self.base / "runner.py"), str(self.base), str(self.submission),
                 str(self.jobs), str(self.scratch), *args],
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
        # The sandbox's own /tmp (in memory, size-limited) comes first: the paths bound after it may
        # lie under the host's /tmp (a project cloned there, its .venv) and must stay visible.
        cmd += ["--size", str(PRIVATE_TMP_BYTES), "--tmpfs", "/tmp"]
        bound = bound_paths()
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
            "--size",
            str(PRIVATE_TMP_BYTES),
            "--tmpfs",
            "/dev/shm",
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
        if self.account is not None and cgroup_support()[0] != "none":
            try:
                self.cgroup = Cgroup(cgroup_support()[0], self.token,
                                     self.memory_mb * 2**20 + STARTUP_MEMORY, self.max_processes + 16)
            except OSError:
                self.cgroup = None
        #: How the sandbox is held, for the report.
        self.limits = (f"cgroup {self.cgroup.version} (memory with tmpfs, processes, one CPU) and rlimits"
                       if self.cgroup is not None else f"rlimits only (no cgroup: {cgroup_support()[1]})")
        procs = self.cgroup.procs_files if self.cgroup is not None else []
        cmd = drop_to(self.account, procs) + cmd
        home = str(self.scratch) if self.mode == "fallback" else "/tmp"
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": home,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "CS_UTILS_FAST": "1",
        }
        self._stderr = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=self.holder,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        expected = self._expected
        line = self._read_line(STARTUP_TIMEOUT)
        if line is None or not line.startswith("ready "):
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            self.close()
            raise SandboxError(f"the {self.mode} sandbox did not start: {' | '.join(tail)}")
        where = line.split(" ", 1)[1]
        if not where.startswith(expected + "/"):
            self.close()
            raise SandboxError(f"cs_utils in the sandbox is {where}, not the sandbox's copy under {expected}")
        self.cs_utils_file = where
        if self.cgroup is not None:  # from now on: what the runner holds, plus the exercise's limit
            try:
                self.cgroup.set_memory(self.cgroup.memory_usage() + self.memory_mb * 2**20)
            except OSError:
                pass
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
        "forkbomb"), "memory" (killed by the cgroup's limit), "disk", "timeout" or "sandbox died".
        After a timeout or a death the sandbox is closed."""
        start = time.perf_counter()
        oom_before = self.cgroup.oom_kills() if self.cgroup is not None else 0
        try:
            self.process.stdin.write(f"{name}\n".encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return "sandbox died", 0.0
        self.stopped = None
        deadline = time.monotonic() + timeout
        started = self._read_line(timeout, self._overflow)
        parts = (started or "").split(" ")
        if len(parts) != 3 or parts[:2] != ["started", name] or not parts[2].isdigit():
            self.close()
            return self.stopped or "sandbox died", time.perf_counter() - start
        child = int(parts[2])
        line = self._read_line(max(0.0, deadline - time.monotonic()), self._overflow)
        seconds = time.perf_counter() - start
        if line is None and self.mode == "fallback" and self.process.poll() is None:
            # Kill the child's session; the runner, a subreaper, then kills what the child left
            # (processes in other sessions included) and reports: nothing outlives the grader.
            try:
                os.killpg(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._sweep()
            self._read_line(10.0)
        oom = self.cgroup is not None and self.cgroup.oom_kills() > oom_before
        if line is None:
            how = self.stopped or (
                "timeout" if self.process.poll() is None and seconds >= timeout * 0.99 else
                ("memory" if oom else "sandbox died")
            )
            self.close()
            return how, seconds
        self._sweep()
        parts = line.split(" ")
        if len(parts) != 3 or parts[:2] != ["done", name]:
            self.close()
            return "sandbox died", seconds
        if parts[2] == "forkbomb":  # what is left of it may still be dying: start afresh
            self.close()
        if oom and parts[2].startswith("signal"):
            return "memory", seconds
        return parts[2], seconds

    def _sweep(self) -> None:
        """Outside bubblewrap: kill what the account runs but the runner, remove what it left in the
        machine's shared places (``/tmp``, ``/dev/shm``, System V IPC)."""
        if self.mode == "fallback" and self.account is not None and self.process is not None:
            if self.cgroup is not None:
                self.cgroup.kill(spare=self.process.pid)
            sweep_account(self.account, spare=self.process.pid)

    def _overflow(self) -> str | None:
        """"disk" once the scratch folder holds over :data:`MAX_SCRATCH_BYTES`, over
        :data:`MAX_SCRATCH_FILES` entries or deeper than :data:`MAX_SCRATCH_DEPTH` folders, or (outside
        bubblewrap) the account holds over :data:`PRIVATE_TMP_BYTES` in ``/tmp`` or ``/dev/shm``;
        "memory" when, without a cgroup, it holds more than its limit in memfds or System V
        segments."""
        count, total, over = count_tree(self.scratch, MAX_SCRATCH_FILES, MAX_SCRATCH_DEPTH)
        if over or total > MAX_SCRATCH_BYTES:
            return "disk"
        if self.mode == "fallback" and account_usage(self.account) > PRIVATE_TMP_BYTES:
            return "disk"
        if self.cgroup is None and hidden_memory(self.account) > self.memory_mb * 2**20:
            return "memory"   # no cgroup counts memfds and System V segments: the watch does
        return None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def read_result(self, name: str, case: int) -> CaseFile:
        """Case ``case`` of exercise ``name`` as the child wrote it; raises :class:`BadResult`
        (``exists`` set when something is there but unusable)."""
        try:
            data = read_regular(self.scratch, name, f"case_{case}.npz", max_bytes=MAX_RESULT_BYTES)
        except OSError as exc:
            error = BadResult(f"no usable result file ({exc.strerror or exc})")
            error.exists = exc.errno not in (2, 20)  # ENOENT, ENOTDIR: nothing there
            raise error from None
        try:
            return parse_case(data)
        except BadResult as exc:
            exc.exists = True
            raise

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            data = read_regular(self.scratch, name, "log.txt", max_bytes=MAX_RESULT_BYTES, tail=4000)
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
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
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.mode == "fallback":
            sweep_account(self.account)

    def cleanup(self) -> None:
        self.close(graceful=True)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        remove_tree(self.holder)
