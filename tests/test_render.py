import re
import shutil
from pathlib import Path

import nbformat
import pytest

from cs_utils.instructor import render


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_renders_every_notebook_with_index(tmp_path):
    notebooks, out = tmp_path / "nb", tmp_path / "build"
    notebooks.mkdir()
    _notebook(notebooks / "01_ok.ipynb", "print(6 * 7)")
    _notebook(notebooks / "02_fails.ipynb", "x = 1", "raise ValueError('planned failure')", "print('never')")
    assert render.main(["--notebooks", str(notebooks), "--out", str(out), "--timeout", "120"]) == 1
    assert "42" in (out / "01_ok.html").read_text()
    assert "planned failure" in (out / "02_fails.html").read_text()
    index = (out / "index.html").read_text()
    rows = [line for line in index.splitlines() if line.startswith("<tr><td><a href=")]
    assert len(rows) == 2 and "01_ok.html" in rows[0] and "02_fails.html" in rows[1]
    assert "<td class='ok'>ok</td>" in rows[0] and "<td class='fail'>FAILED</td>" in rows[1]
    assert "<td>cell 2: ValueError: planned failure</td>" in rows[1]


def test_no_notebooks_succeeds_and_says_so(tmp_path, capsys):
    (tmp_path / "nb").mkdir()
    assert render.main(["--notebooks", str(tmp_path / "nb"), "--out", str(tmp_path / "b")]) == 0
    assert "No notebooks" in capsys.readouterr().out
    assert "No notebooks" in (tmp_path / "b" / "index.html").read_text()
    assert render.main(["--notebooks", str(tmp_path / "missing")]) == 2


def test_nbval_runs_a_notebook_against_the_package(tmp_path):
    """The `make test` notebook path: nbval executes cells in a kernel that imports cs_utils."""
    import os
    import subprocess
    import sys

    _notebook(tmp_path / "ok.ipynb", "import cs_utils\nb = cs_utils.budget()",
              "assert b.fast, 'make test runs notebooks with CS_UTILS_FAST=1'")
    _notebook(tmp_path / "bad.ipynb", "import cs_utils\ncs_utils.imagenet_label(1000)")
    _notebook(tmp_path / "online.ipynb", "import socket\nsocket.create_connection(('192.0.2.1', 80), 1)")
    ipython_dir = tmp_path / "ipython"
    shutil.copytree(Path(__file__).parent / "ipython" / "profile_default" / "startup",
                    ipython_dir / "profile_default" / "startup")
    env = dict(os.environ, CS_UTILS_FAST="1", IPYTHONDIR=str(ipython_dir))
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--nbval-lax",
               "--rootdir", str(tmp_path)] + [str(tmp_path / f"{n}.ipynb") for n in ("ok", "bad", "online")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    # pytest -v names an item "ok::ipynb::Cell 0" (nbval's quirk), the failures "ok.ipynb::Cell 0"
    outcomes = {f"{name}.ipynb::Cell {cell}": outcome for name, cell, outcome in
                re.findall(r"^(\w+)::ipynb::Cell (\d+) (PASSED|FAILED)", run.stdout, re.MULTILINE)}
    assert run.returncode == 1 and outcomes == {
        "ok.ipynb::Cell 0": "PASSED", "ok.ipynb::Cell 1": "PASSED",
        "bad.ipynb::Cell 0": "FAILED", "online.ipynb::Cell 0": "FAILED"}, run.stdout + run.stderr
    failures = run.stdout.split("= FAILURES =", 1)[-1]
    assert "out of range" in failures.split("online.ipynb", 1)[0], run.stdout
    assert "SocketConnectBlockedError" in failures.split("online.ipynb", 1)[1], run.stdout


def test_parallel_kernels_run_at_once_with_their_share_of_threads(tmp_path):
    """Two notebooks that each wait for the other's file can only finish if their kernels run
    at the same time; each kernel sees cores // jobs threads."""
    import os

    notebooks, out = tmp_path / "nb", tmp_path / "build"
    notebooks.mkdir()
    wait = ("import os, pathlib, time\n"
            "me, other = pathlib.Path({me!r}), pathlib.Path({other!r})\n"
            "me.touch()\n"
            "deadline = time.monotonic() + 60\n"
            "while not other.exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
            "assert other.exists(), 'the other notebook never started'\n"
            "print('threads', os.environ.get('OMP_NUM_THREADS'))")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _notebook(notebooks / "01_a.ipynb", wait.format(me=a, other=b))
    _notebook(notebooks / "02_b.ipynb", wait.format(me=b, other=a))
    results = render.render_notebooks(notebooks, out, timeout=120, jobs=2, log=lambda _: None)
    assert [r.error for r in results] == [None, None]
    expected = f"threads {max(1, (os.cpu_count() or 1) // 2)}"
    assert expected in (out / "01_a.html").read_text() and expected in (out / "02_b.html").read_text()


def test_longest_notebook_starts_first_and_timings_are_kept(tmp_path):
    notebooks, out = tmp_path / "nb", tmp_path / "build"
    notebooks.mkdir()
    out.mkdir()
    for name in ("01_short", "02_long", "03_new"):
        _notebook(notebooks / f"{name}.ipynb", "print(1)")
    (out / "timings.json").write_text('{"01_short.ipynb": 5.0, "02_long.ipynb": 300.0, "gone.ipynb": 9}')
    lines = []
    results = render.render_notebooks(notebooks, out, timeout=120, jobs=1, log=lines.append)
    started = [line.split()[1] for line in lines if line.startswith("executing")]
    # no recorded time: it may be the longest, so it starts first
    assert [Path(s).name for s in started] == ["03_new.ipynb", "02_long.ipynb", "01_short.ipynb"]
    assert [r.notebook.name for r in results] == ["01_short.ipynb", "02_long.ipynb", "03_new.ipynb"]
    import json
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"01_short.ipynb", "02_long.ipynb", "03_new.ipynb", "gone.ipynb"}
    assert timings["02_long.ipynb"] < 300.0   # replaced by this run's time


def test_jobs_must_be_a_positive_int(tmp_path):
    (tmp_path / "nb").mkdir()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="jobs must be a positive int"):
            render.render_notebooks(tmp_path / "nb", tmp_path / "b", jobs=bad)
