"""Who a submission runs as and what holds it: sandbox accounts, cgroups, root-only folders, and
file operations on folders that a submission controls.

* **Accounts.** As root, a submission never runs as root nor as the grader's user: it runs as a
  dedicated system account ``cs-sandbox<slot>`` (one per sandbox running at once, so two students
  graded in parallel never share a uid), with no supplementary groups (:func:`sandbox_account`,
  created with ``useradd`` when missing; :func:`drop_to`, through ``setpriv``).
* **Cgroups** are :mod:`cs_utils.instructor.cgroups`.
* **Root-only folders.** What the grader keeps (its tree, the reference, the cache of expected
  outputs, reports, the class folder) is made root-only before grading (:func:`make_private`,
  :func:`lock_project`) and checked as the sandbox account (:func:`accessible_to`).
* **Hostile folders.** Files a submission wrote are opened only as regular files, never through a
  link, never blocking (:func:`read_regular`); its folders are counted without recursion and with a
  depth limit (:func:`count_tree`) and removed by ``rm -rf`` (:func:`remove_tree`); what the account
  left in the machine's shared places (``/tmp``, ``/dev/shm``, System V IPC) is removed after each
  exercise (:func:`sweep_account`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ACCOUNT_PREFIX",
    "Account",
    "IsolationError",
    "accessible_to",
    "account_slot",
    "count_tree",
    "drop_to",
    "hidden_memory",
    "is_root",
    "kill_until_none",
    "lock_project",
    "make_private",
    "open_python_to",
    "read_regular",
    "remove_tree",
    "sandbox_account",
    "sweep_account",
]

ACCOUNT_PREFIX = "cs-sandbox"
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_ACCOUNT_LOCK = threading.Lock()


class IsolationError(RuntimeError):
    """The machine cannot isolate a submission as required; the message says what to do."""


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class Account:
    """A sandbox account: the uid and gid a submission's processes run as."""

    name: str
    uid: int
    gid: int


def sandbox_account(slot: int = 0) -> Account | None:
    """The account ``cs-sandbox<slot>``, created (``useradd --system``) when missing. ``None`` when the
    grader is not root (it cannot switch users: only bubblewrap then isolates)."""
    if not is_root():
        return None
    name = f"{ACCOUNT_PREFIX}{int(slot)}"
    with _ACCOUNT_LOCK:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            shells = ("/usr/sbin/nologin", "/sbin/nologin")
            nologin = next((p for p in shells if os.path.exists(p)), "/bin/false")
            try:
                done = subprocess.run(
                    [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", nologin, name],
                    capture_output=True, text=True, timeout=60,
                )
            except OSError as exc:
                raise IsolationError(f"cannot create the sandbox account {name}: {exc}") from None
            if done.returncode != 0 and "already exists" not in done.stderr:
                why = done.stderr.strip()[:200]
                raise IsolationError(f"cannot create the sandbox account {name}: {why}")  # noqa: B904
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise IsolationError(f"useradd did not create the sandbox account {name}") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise IsolationError(f"the sandbox account {name} has uid or gid 0: remove it (userdel {name})")
    return Account(name, entry.pw_uid, entry.pw_gid)


SLOTS = Path("/run/cs-utils-grader")


@contextlib.contextmanager
def account_slot():
    """A sandbox slot that no other grader on this machine holds now (a lock file per slot, in a
    root-only folder): two submissions graded at once, by threads or by processes, never share an
    account. Yields the slot number (0 when the grader is not root: it has no accounts)."""
    if not is_root():
        yield 0
        return
    SLOTS.mkdir(parents=True, exist_ok=True)
    make_private(SLOTS)
    for slot in range(256):
        fd = os.open(SLOTS / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield slot
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise IsolationError("256 sandboxes already run on this machine")


def drop_to(account: Account | None, cgroup_procs: list[str] = ()) -> list[str]:
    """The command prefix that moves the new process into the cgroups (as root), then runs the rest
    as ``account`` with no supplementary groups, no capabilities and no way to gain privileges; it
    dies with the grader. ``[]`` when ``account`` is None."""
    if account is None:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise IsolationError("setpriv is missing (apt-get install util-linux): it runs the sandbox's account")
    join = 'for f in $1; do echo $$ > "$f" || exit 97; done; shift; exec "$@"'
    return ["/bin/sh", "-c", join, "sh", " ".join(cgroup_procs),
            setpriv, f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--pdeathsig=KILL", "--"]


# --------------------------------------------------------------------------- root-only folders


def make_private(path: Path) -> None:
    """``path`` owned by root, mode 0700 (a folder) or 0600: nobody else reads, writes or enters it."""
    path = Path(path)
    if not is_root() or not path.exists():
        return
    os.chown(path, 0, 0, follow_symlinks=False)
    os.chmod(path, 0o700 if path.is_dir() else 0o600)


def lock_project(root: Path, keep: list[Path] = ()) -> None:
    """Make the grader's project root-only: every entry of ``root`` loses its group and other bits,
    except the entries holding ``keep`` (the Python environment the sandbox runs); ``root`` itself
    stays enterable (0711) when it holds one of them, so the sandbox reaches them by name only."""
    if not is_root():
        return
    root = Path(root).resolve()
    kept = set()
    for path in keep:
        path = Path(path).resolve()
        if root in path.parents:
            kept.add(path.relative_to(root).parts[0])
    for entry in os.scandir(root):
        if entry.name in kept or entry.is_symlink():
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        os.chown(entry.path, 0, 0, follow_symlinks=False)
        os.chmod(entry.path, stat.S_IMODE(mode) & 0o700)
    os.chown(root, 0, 0)
    os.chmod(root, 0o711 if kept else 0o700)


def open_python_to(account: Account | None, paths: list[str]) -> None:
    """Let ``account`` reach the Python it runs: add the search bit (``o+x``, never read) to every
    folder above ``paths`` that lacks it (e.g. ``/root`` above a pyenv Python)."""
    if account is None:
        return
    for path in paths:
        path = Path(os.path.realpath(path))
        for folder in [*reversed(path.parents), path]:
            try:
                mode = folder.stat().st_mode
            except OSError:
                break
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)


def accessible_to(account: Account | None, paths: list[Path]) -> list[str]:
    """The ``paths`` that ``account`` can read, write or enter (checked as that account)."""
    if account is None or not paths:
        return []
    script = 'for p; do if [ -r "$p" ] || [ -w "$p" ] || [ -x "$p" ]; then printf "%s\\n" "$p"; fi; done'
    done = subprocess.run([*drop_to(account), "/bin/sh", "-c", script, "sh", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise IsolationError(f"cannot run as {account.name}: {done.stderr.strip()[:200]}")
    return [line for line in done.stdout.splitlines() if line]


# --------------------------------------------------------------------------- folders a submission controls


def read_regular(folder: Path, *parts: str, max_bytes: int, tail: int | None = None) -> bytes:
    """The bytes of ``folder/parts...`` when every part is a real folder or, last, a regular file of
    at most ``max_bytes`` (``tail``: only its last ``tail`` bytes): no link is followed, a pipe or
    device never blocks. Raises ``OSError``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(folder, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > max_bytes:
            raise OSError(errno.EFBIG, "too large")
        if tail is not None:
            f.seek(max(0, info.st_size - tail))
            return f.read(tail)
        return f.read(max_bytes + 1)[:max_bytes]


def count_tree(folder: Path, max_entries: int, max_depth: int) -> tuple[int, int, bool]:
    """``(entries, bytes, over)`` of the tree under ``folder``, walked without recursion and without
    following links; stops as soon as it holds over ``max_entries`` entries or is deeper than
    ``max_depth`` (``over`` is then True)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        top = os.open(folder, flags)
    except OSError:
        return 0, 0, False
    stack, count, total = [(top, 0)], 0, 0
    try:
        while stack:
            fd, depth = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        count += 1
                        if count > max_entries:
                            return count, total, True
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        total += info.st_size
                        if stat.S_ISDIR(info.st_mode):
                            if depth + 1 > max_depth:
                                return count, total, True
                            try:
                                stack.append((os.open(entry.name, flags, dir_fd=fd), depth + 1))
                            except OSError:
                                continue
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    return count, total, False


def remove_tree(path: Path) -> None:
    """Remove ``path`` whatever its depth or links (``rm -rf --one-file-system``, which never follows
    a link and does not recurse on the stack)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, timeout=600)
    if os.path.lexists(path):  # e.g. no rm: the slower way
        shutil.rmtree(path, ignore_errors=True)


def _uid_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def kill_until_none(victims) -> None:
    """SIGKILL what ``victims()`` lists, again and again, until it lists nothing (a fork bomb's
    children included; at most 200 rounds)."""
    for _ in range(200):
        found = victims()
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def kill_account(account: Account, spare: int | None = None) -> None:
    """Kill every process running as ``account`` but ``spare``, until none is left."""
    kill_until_none(lambda: [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != spare
                              and _uid_of(p) == account.uid])


def _ipc_remove(account: Account) -> None:
    for kind, flag in (("shm", "-m"), ("msg", "-q"), ("sem", "-s")):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        header = lines[0].split() if lines else []
        if "uid" not in header:
            continue
        ident = "shmid" if kind == "shm" else ("msqid" if kind == "msg" else "semid")
        for line in lines[1:]:
            fields = dict(zip(header, line.split()))
            if fields.get("uid") == str(account.uid) and ident in fields:
                subprocess.run(["ipcrm", flag, fields[ident]], capture_output=True, timeout=10)


def _owned_entries(account: Account):
    """``(path, stat)`` of each entry of the machine's shared places that ``account`` owns."""
    for folder in SHARED_WRITABLE:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_uid == account.uid:
                yield Path(entry.path), info


def sweep_account(account: Account | None, spare: int | None = None) -> int:
    """After an exercise outside bubblewrap: kill what runs as ``account`` (but ``spare``), remove what
    it left in the machine's shared places; return the bytes removed."""
    if account is None:
        return 0
    kill_account(account, spare)
    removed = 0
    for path, info in list(_owned_entries(account)):
        removed += info.st_blocks * 512
        remove_tree(path)
    _ipc_remove(account)
    return removed


def account_usage(account: Account | None, max_entries: int = 20000) -> int:
    """Bytes that ``account`` holds in the machine's shared places (``/tmp``, ``/dev/shm``...)."""
    if account is None:
        return 0
    total = 0
    for path, info in _owned_entries(account):
        total += info.st_blocks * 512
        if stat.S_ISDIR(info.st_mode):
            total += count_tree(path, max_entries, 64)[1]
    return total


def hidden_memory(account: Account | None) -> int:
    """Bytes that ``account`` holds outside its processes' address spaces, which no rlimit counts:
    System V shared memory (this IPC namespace's) and the memfds its processes hold open."""
    if account is None:
        return 0
    total = 0
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            fields = dict(zip(header, line.split()))
            if fields.get("uid") == str(account.uid):
                total += int(fields.get("rss", fields.get("size", 0)))
    except (OSError, IndexError, ValueError):
        pass
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if _uid_of(pid) != account.uid:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
            except OSError:
                continue
    return total


def python_paths() -> list[str]:
    """What a sandbox needs of this Python: its prefixes and the site-packages of numpy and torch."""
    import numpy
    import torch

    paths = [sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix, sys.executable,
             os.path.realpath(sys.executable)]
    paths += [str(Path(m.__file__).resolve().parent.parent) for m in (numpy, torch)]
    return list(dict.fromkeys(paths))
