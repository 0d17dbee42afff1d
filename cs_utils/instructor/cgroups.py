"""Each sandbox's own cgroup, where the machine allows it (cgroup v2, or v1's ``memory``, ``pids``
and ``cpu`` controllers): a memory limit that counts what a process holds in tmpfs and memfd, a
process limit and one CPU at most, so a busy submission cannot starve its neighbour
(:class:`Cgroup`; :func:`cgroup_support` says whether this machine gives one).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path

from .isolation import is_root, kill_until_none

__all__ = ["CGROUP_NAME", "Cgroup", "cgroup_support"]

CGROUP_NAME = "cs-utils-grader"


def _write(path: Path, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


@functools.lru_cache(maxsize=1)
def cgroup_support() -> tuple[str, str]:
    """``("v2", where)``, ``("v1", where)`` or ``("none", why)``: whether sandboxes get their own cgroup."""
    if os.environ.get("CS_UTILS_CGROUP") == "none":
        return "none", "CS_UTILS_CGROUP=none"
    if not is_root():
        return "none", "the grader is not root"
    root = Path("/sys/fs/cgroup")
    try:
        if (root / "cgroup.controllers").exists():
            wanted = {"memory", "pids", "cpu"}
            if not wanted <= set((root / "cgroup.controllers").read_text().split()):
                return "none", "cgroup v2 without the memory, pids and cpu controllers"
            probe = Cgroup("v2", f"probe-{uuid.uuid4().hex[:8]}", 2**30, 16)
        elif all((root / c / "cgroup.procs").exists() for c in ("memory", "pids", "cpu")):
            probe = Cgroup("v1", f"probe-{uuid.uuid4().hex[:8]}", 2**30, 16)
        else:
            return "none", "no cgroup v2 and no v1 memory, pids and cpu controllers"
    except OSError as exc:
        return "none", f"cgroups not writable here ({exc.strerror or exc})"
    probe.remove()
    return probe.version, f"{probe.version} under {root}"


class Cgroup:
    """One sandbox's cgroup: memory (tmpfs and memfd included, no swap), process count, one CPU."""

    def __init__(self, version: str, name: str, memory_bytes: int, max_processes: int):
        self.version, self.name = version, name
        root = Path("/sys/fs/cgroup")
        if version == "v2":
            parent = root / CGROUP_NAME
            parent.mkdir(exist_ok=True)
            for where in (root, parent):
                _write(where / "cgroup.subtree_control", "+memory +pids +cpu")
            self.dirs = {"all": parent / name}
        else:
            self.dirs = {c: root / c / CGROUP_NAME / name for c in ("memory", "pids", "cpu")}
        try:
            for folder in self.dirs.values():
                folder.mkdir(parents=True, exist_ok=False)
            self.set_memory(memory_bytes)
            if version == "v2":
                _write(self.dirs["all"] / "pids.max", max_processes)
                _write(self.dirs["all"] / "cpu.max", "100000 100000")
            else:
                _write(self.dirs["pids"] / "pids.max", max_processes)
                _write(self.dirs["cpu"] / "cpu.cfs_period_us", 100000)
                _write(self.dirs["cpu"] / "cpu.cfs_quota_us", 100000)
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def set_memory(self, memory_bytes: int) -> None:
        memory_bytes = int(memory_bytes)
        if self.version == "v2":
            _write(self.dirs["all"] / "memory.max", memory_bytes)
            swap = self.dirs["all"] / "memory.swap.max"
            if swap.exists():
                _write(swap, 0)
            return
        folder = self.dirs["memory"]
        files = [folder / "memory.limit_in_bytes"]
        if (folder / "memory.memsw.limit_in_bytes").exists():
            files.append(folder / "memory.memsw.limit_in_bytes")
        for order in (files, files[::-1]):  # memsw >= limit at every step: one of the orders works
            try:
                for path in order:
                    _write(path, memory_bytes)
                return
            except OSError:
                continue
        for path in files:
            _write(path, memory_bytes)

    def memory_usage(self) -> int:
        path = self.dirs["all"] / "memory.current" if self.version == "v2" else \
            self.dirs["memory"] / "memory.usage_in_bytes"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return 0

    def oom_kills(self) -> int:
        """How many processes the memory limit killed so far (or how often it was hit)."""
        path = self.dirs["all"] / "memory.events" if self.version == "v2" else \
            self.dirs["memory"] / "memory.oom_control"
        try:
            fields = dict(line.split() for line in path.read_text().splitlines() if len(line.split()) == 2)
            if "oom_kill" in fields:
                return int(fields["oom_kill"])
            if self.version == "v1":
                return int((self.dirs["memory"] / "memory.failcnt").read_text())
        except (OSError, ValueError):
            pass
        return 0

    def pids(self) -> list[int]:
        found = set()
        for path in self.procs_files:
            try:
                found.update(int(p) for p in Path(path).read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(found)

    def kill(self, spare: int | None = None) -> None:
        """Kill every process in the cgroup but ``spare``, until none is left (forks included)."""
        kill_until_none(lambda: [p for p in self.pids() if p != spare])

    def remove(self) -> None:
        self.kill()
        for folder in self.dirs.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
