"""The browser test's server is always stopped, with everything it started (runs in `make test`)."""

import sys
import textwrap

import psutil
import pytest
from lab_server import LAB_SETTINGS, LabServer, LabServerError, free_port

# A stand-in for JupyterLab: answers every GET with 200 and starts a child in its own session,
# as JupyterLab starts its kernels; prints the child's pid.
STAND_IN = textwrap.dedent("""
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    print("child", child.pid, flush=True)
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
""")


def child_pid(log) -> int:
    return int(next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("child ")))


def test_the_server_and_its_children_are_stopped_when_the_test_fails(tmp_path):
    log = tmp_path / "server.log"
    lab = LabServer(
        tmp_path, python_path=tmp_path, log=log, command=[sys.executable, "-c", STAND_IN, "{port}"]
    )
    with pytest.raises(RuntimeError, match="the test failed"):
        with lab:
            server, child = lab.proc.pid, child_pid(log)
            assert psutil.pid_exists(server) and psutil.pid_exists(child)
            assert lab.lab_url("notebooks/a.ipynb") == (
                f"http://127.0.0.1:{lab.port}/lab/tree/notebooks/a.ipynb?token={lab.token}&reset"
            )
            raise RuntimeError("the test failed")
    for pid in (server, child):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert lab.proc is None


def test_a_server_that_exits_at_once_is_reported_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('cannot start: port {port} is taken'); sys.exit(3)"]
    with pytest.raises(LabServerError, match=r"(?s)exited with code 3 .*cannot start: port \d+ is taken"):
        LabServer(tmp_path, python_path=tmp_path, log=tmp_path / "server.log", command=command).start()


def test_a_missing_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(LabServerError, match="is not a folder; create it first"):
        LabServer(tmp_path / "student", python_path=tmp_path, log=tmp_path / "log")


def test_settings_attach_every_cell_and_never_autosave():
    assert LAB_SETTINGS["@jupyterlab/notebook-extension:tracker"]["windowingMode"] == "none"
    assert LAB_SETTINGS["@jupyterlab/docmanager-extension:plugin"]["autosave"] is False
    assert 1024 <= free_port() <= 65535
