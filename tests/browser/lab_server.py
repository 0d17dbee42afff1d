"""A JupyterLab server for the browser test: a free local port, a token, its own settings, always stopped.

::

    with LabServer(root="build/student", python_path="build/student") as lab:
        lab.notebook_url("notebooks/02_saliency_and_occlusion.ipynb")

The server runs in its own process group; leaving the ``with`` block (also by an exception)
stops the group with SIGTERM, then SIGKILLs every process the server started that is still
alive (its kernels run in sessions of their own). Settings make the page testable: every
cell is attached to the page (no windowing), no autosave (a run never writes outputs into a
notebook), no news or update toasts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

__all__ = ["LAB_SETTINGS", "LabServer", "LabServerError", "free_port", "stop_process_tree"]

#: User settings written for the server: plugin id -> settings.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}


class LabServerError(RuntimeError):
    """The server did not start; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_tree(proc: subprocess.Popen, grace: float = 15.0) -> list[int]:
    """Stop ``proc`` (started with ``start_new_session=True``) and everything it started.

    SIGTERM to its process group and up to ``grace`` seconds for a clean exit; then SIGTERM,
    and 5 s later SIGKILL, to each descendant still alive (found before the first SIGTERM, so
    kernels in sessions of their own are included), and SIGKILL to the group. Returns the
    pids that had to be killed."""
    try:
        tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    alive = [pid for pid in tree if _running(pid)]
    for pid in alive:  # children in sessions of their own (kernels) the server did not stop
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in tree if _running(pid)]
    killed = []
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=grace)
    return killed


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LabServer:
    """JupyterLab serving ``root``; kernels import ``cs_utils`` from ``python_path`` first.

    ``log`` is the server's log file (kept after the run for diagnosis). ``env`` entries are
    added to the server's (and so the kernels') environment; ``MPLBACKEND`` is removed so that
    the kernels use the inline backend and figures reach the page as images."""

    def __init__(
        self,
        root: str | Path,
        python_path: str | Path,
        log: str | Path,
        env: dict[str, str] | None = None,
        start_timeout: float = 180.0,
        command: list[str] | None = None,
    ):
        self.root, self.python_path = Path(root).resolve(), Path(python_path).resolve()
        self.log = Path(log)
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.command = command
        self.token = secrets.token_hex(16)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        if not self.root.is_dir():
            raise LabServerError(
                f"{self.root} is not a folder; create it first (make student writes build/student)"
            )

    # --------------------------------------------------------------------------- urls

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str = "") -> str:
        """The URL that opens ``path`` (relative to ``root``) in JupyterLab, with the token."""
        tail = f"/tree/{path}" if path else ""
        return f"{self.base_url}/lab{tail}?token={self.token}&reset"

    # --------------------------------------------------------------------------- lifecycle

    def environment(self, config_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env.update(self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.python_path)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        env["JUPYTER_CONFIG_DIR"] = str(config_dir / "config")
        env["JUPYTER_RUNTIME_DIR"] = str(config_dir / "runtime")
        env["JUPYTER_DATA_DIR"] = str(config_dir / "data")
        env["JUPYTERLAB_SETTINGS_DIR"] = str(config_dir / "settings")
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(config_dir / "workspaces")
        return env

    def _write_settings(self, config_dir: Path) -> None:
        for plugin, values in LAB_SETTINGS.items():
            package, name = plugin.rsplit(":", 1)
            path = config_dir / "settings" / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def _argv(self) -> list[str]:
        if self.command is not None:  # another server (the tests' stand-in); "{port}" is filled in
            return [part.replace("{port}", str(self.port)) for part in self.command]
        root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # CI runs as root
        return [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            *root,
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--ServerApp.terminals_enabled=False",
        ]

    def start(self) -> LabServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="lab-server-")
        config_dir = Path(self._tmp.name)
        self._write_settings(config_dir)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(3):  # a port taken between free_port() and the bind: try another
                self.port = free_port()
                with open(self.log, "w") as log:
                    self.proc = subprocess.Popen(
                        self._argv(),
                        cwd=self.root,
                        env=self.environment(config_dir),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                try:
                    self._wait_until_ready()
                    return self
                except LabServerError as exc:
                    stop_process_tree(self.proc)
                    self.proc = None
                    if "already in use" not in str(exc) or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.base_url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabServerError(
                    f"JupyterLab exited with code {self.proc.returncode} before it answered "
                    f"on port {self.port}.\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise LabServerError(
            f"JupyterLab did not answer on {self.base_url} within {self.start_timeout:.0f} s."
            f"\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log})"
        return f"last lines of {self.log}:\n" + "\n".join(text[-lines:])

    def stop(self) -> list[int]:
        """Stop the server and its kernels (idempotent); returns the pids that needed SIGKILL."""
        killed = []
        if self.proc is not None:
            killed = stop_process_tree(self.proc)
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return killed

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
