"""The grader's isolation parts on their own: reading hostile folders, counting and removing them,
accounts, CSV cells, seeds, and the integrity check that stops grading."""

from __future__ import annotations

import csv
import os
import pwd
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import require_root

from cs_utils.instructor import autograder, cgroups, class_grading, isolation
from cs_utils.instructor.isolation import count_tree, read_regular, remove_tree


def _deep(folder: Path, depth: int) -> None:
    """``depth`` nested folders under ``folder``, made relative to each other (no long paths)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)


def test_read_regular_reads_a_file_and_refuses_pipes_links_and_sockets_without_blocking(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "case.npz").write_bytes(b"12345")
    assert read_regular(tmp_path, "ok", "case.npz", max_bytes=10) == b"12345"
    assert read_regular(tmp_path, "ok", "case.npz", max_bytes=10, tail=2) == b"45"
    os.mkfifo(tmp_path / "ok" / "fifo")                      # nobody writes it: a plain open would hang
    (tmp_path / "ok" / "link").symlink_to(tmp_path / "ok" / "case.npz")
    (tmp_path / "linked").symlink_to(tmp_path / "ok", target_is_directory=True)
    socket.socket(socket.AF_UNIX).bind(str(tmp_path / "ok" / "sock"))
    start = time.monotonic()
    for parts in (("ok", "fifo"), ("ok", "link"), ("linked", "case.npz"), ("ok", "sock"), ("ok", "missing")):
        with pytest.raises(OSError):
            read_regular(tmp_path, *parts, max_bytes=10)
    with pytest.raises(OSError, match="too large"):
        read_regular(tmp_path, "ok", "case.npz", max_bytes=4)
    assert time.monotonic() - start < 1.0


def test_count_tree_stops_at_the_entry_and_depth_limits_without_recursion(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 100)
    assert count_tree(tmp_path, 10, 5) == (2, 100 + (tmp_path / "a").stat().st_size, False)
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(50):
        (wide / f"d{i}").mkdir()
    assert count_tree(wide, 20, 5)[2] is True
    deep = tmp_path / "deep"
    deep.mkdir()
    try:
        _deep(deep, 3000)                                     # deeper than Python's recursion limit
        count, _, over = count_tree(deep, 10**6, 32)
    finally:
        remove_tree(deep)                                     # pytest's own cleanup would recurse
    assert over and count == 33
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)   # never followed
    assert count_tree(tmp_path / "a", 10, 5)[2] is False


def test_remove_tree_removes_any_depth_and_never_follows_a_link(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    gone = tmp_path / "gone"
    gone.mkdir()
    _deep(gone, 5000)
    (gone / "link").symlink_to(keep, target_is_directory=True)
    remove_tree(gone)
    assert not gone.exists() and (keep / "precious").read_text() == "x"


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path):
    assert [class_grading.safe_cell(v) for v in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "ok", 3.5, -1.0)] == [
        "'=1+1", "'+1", "'-2", "'@SUM(A1)", "'\tx", "ok", 3.5, -1.0]
    report = {"points": 1.0, "max_points": 2, "seed": 9, "problem": "=HYPERLINK(\"x\")",
              "exercises": [{"name": "tv_loss", "points": 1.0, "status": "pass"}]}
    path = tmp_path / "grades.csv"
    class_grading.write_grades_csv(path, [("@evil", report, "2026-01-01")], ["tv_loss"])
    with open(path, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["student_id"] == "'@evil" and row["notes"].startswith("'=HYPERLINK") and row["seed"] == "9"


def test_a_fresh_seed_each_run_unless_one_is_given():
    seeds = {autograder.draw_seed() for _ in range(20)}
    assert len(seeds) > 15 and all(0 <= s < 2**31 for s in seeds)


@pytest.mark.usefixtures("as_root")
def test_slots_are_exclusive_across_threads_and_accounts_are_unprivileged():
    held, lock = [], threading.Lock()
    entered = threading.Barrier(4)

    def take():
        with isolation.account_slot() as slot:
            with lock:
                held.append(slot)
            entered.wait(timeout=30)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(held)) == 4                                   # four at once: four slots
    for slot in set(held):
        account = isolation.sandbox_account(slot)
        entry = pwd.getpwuid(account.uid)
        assert entry.pw_name == f"cs-sandbox{slot}" and account.uid != 0 and account.gid != 0
        assert entry.pw_shell.endswith(("nologin", "false"))
        ids = subprocess.run([*isolation.drop_to(account), "id"], capture_output=True, text=True).stdout
        assert ids.strip() == f"uid={account.uid}({account.name}) gid={account.gid}({account.name}) " \
                              f"groups={account.gid}({account.name})"


@pytest.mark.usefixtures("as_root")
def test_accessible_to_sees_what_the_account_can_reach(tmp_path):
    account = isolation.sandbox_account(0)
    public, private = Path("/tmp") / f"cs-public-{os.getpid()}", Path("/tmp") / f"cs-private-{os.getpid()}"
    try:
        public.mkdir(mode=0o755)
        private.mkdir()
        isolation.make_private(private)
        assert isolation.accessible_to(account, [public, private]) == [str(public)]
    finally:
        public.rmdir()
        private.rmdir()


def test_a_grader_changed_while_a_submission_runs_stops_grading_loudly(tmp_path, monkeypatch):
    """The integrity check: a grader file that changes during grading stops it (the class too)."""
    import fake_submissions as fake

    package = fake.solution_copy(tmp_path / "s")
    calls = []

    def tampered(extra=()):
        calls.append(1)
        return f"digest-{len(calls)}"                          # differs after the submission ran

    monkeypatch.setattr(autograder, "grader_digest", tampered)
    with pytest.raises(autograder.IntegrityError, match="changed while"):
        autograder.grade(package.parent, ["tv_loss"], hidden=1)
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    (package.parent).rename(class_dir / "s1")
    with pytest.raises(autograder.IntegrityError):
        class_grading.grade_class(class_dir, tmp_path / "out", names=["tv_loss"], hidden=1, progress=False)
    from cs_utils.instructor.grade import main

    assert main([str(class_dir / "s1"), "--only", "tv_loss", "--hidden", "1"]) == 3


def test_without_root_and_without_bubblewrap_the_grader_refuses(monkeypatch):
    from cs_utils.instructor import sandbox

    sandbox.isolation_mode.cache_clear()
    monkeypatch.setattr(sandbox, "sandbox_account", lambda slot=0: None)
    monkeypatch.setenv("CS_UTILS_SANDBOX", "fallback")
    try:
        with pytest.raises(isolation.IsolationError, match="must run as root"):
            sandbox.isolation_mode()
    finally:
        sandbox.isolation_mode.cache_clear()


@pytest.mark.usefixtures("as_root")
def test_without_cgroups_memory_outside_the_address_space_is_still_stopped(tmp_path, monkeypatch):
    """Where the machine gives no cgroup (a Docker container, say), files in /dev/shm and /tmp,
    memfds and System V segments are watched: each attack ends with zero points, nothing is left."""
    import hostile_submissions as hostile

    plan = {"content_loss": "shm", "tv_loss": "tmpfile", "instance_norm": "memfd", "mix_styles": "sysv"}
    marker = f"cs-utils-nocgroup-{os.getpid()}"
    package = hostile.hostile(tmp_path / "s", plan, hostile.Targets(marker=marker))
    monkeypatch.setenv("CS_UTILS_CGROUP", "none")
    cgroups.cgroup_support.cache_clear()
    try:
        report = autograder.grade(package.parent, [*plan, "gram_matrix"], hidden=1, timeout=30,
                                  memory_mb=512, mode="fallback")
    finally:
        cgroups.cgroup_support.cache_clear()
    assert report["limits"].startswith("rlimits only")
    scores = {s["name"]: s for s in report["exercises"]}
    for name in plan:
        assert scores[name]["points"] == 0 and scores[name]["status"] in ("memory", "crashed"), scores[name]
    assert scores["gram_matrix"]["status"] == "pass"
    assert not [p for d in ("/tmp", "/dev/shm") for p in Path(d).glob(f"{marker}*")]
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    keys = {dict(zip(lines[0].split(), line.split()))["key"] for line in lines[1:]}
    assert not keys & {str(hostile.sysv_key(marker) + i) for i in range(8)}


def test_the_isolation_probe_runs_as_an_account_no_other_grader_holds(monkeypatch):
    """Another grader holding slot 0 sweeps its account after each exercise, killing whatever runs
    as it: the probe of a grader starting meanwhile must run as another account, or it would fall
    back to the weaker sandbox for nothing (seen with three pytest workers grading at once)."""
    from cs_utils.instructor import sandbox

    require_root("the sandbox accounts")
    probed = []

    def probe(bwrap, account):
        probed.append(account.name)
        return subprocess.CompletedProcess([bwrap], 0, "", "")

    monkeypatch.setattr(sandbox, "_bwrap_probe", probe)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/bwrap")
    monkeypatch.delenv("CS_UTILS_SANDBOX", raising=False)
    with isolation.account_slot() as held:
        assert sandbox.isolation_mode.__wrapped__() == ("bubblewrap", "/usr/bin/bwrap")
    assert len(probed) == 1 and probed[0].startswith(isolation.ACCOUNT_PREFIX)
    assert probed[0] != f"{isolation.ACCOUNT_PREFIX}{held}"


def test_the_sandbox_copy_is_built_once_when_threads_ask_at_once(monkeypatch):
    """A class's threads all ask for the sandbox's copy at the start: one copy, no failure (building
    it parses sources with ``ast``, which CPython 3.11 cannot do in two threads at once)."""
    monkeypatch.setattr(autograder, "_BASE", {})
    start = threading.Barrier(4)
    got, errors = [], []

    def ask():
        start.wait(timeout=30)
        try:
            got.append(autograder.sandbox_base())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(got)) == 1
    assert (got[0] / "cs_utils" / "losses.py").is_file() and (got[0] / "runner.py").is_file()
