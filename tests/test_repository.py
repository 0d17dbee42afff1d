"""Repository gates: clean notebooks, no network, CI runs the README's test command."""

import json
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def stored_outputs(path: Path) -> list[int]:
    """Indices of code cells that carry outputs or execution counts."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [i for i, c in enumerate(nb.get("cells", []))
            if c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count"))]


def test_notebooks_are_committed_without_outputs():
    dirty = {path.name: cells for path in NOTEBOOKS if (cells := stored_outputs(path))}
    assert not dirty, f"cells with stored outputs {dirty}: run `make strip` before committing"


def test_output_check_catches_a_dirty_notebook(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")]
    nb.cells[1].execution_count = 3
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    nbformat.write(nb, tmp_path / "dirty.ipynb")
    assert stored_outputs(tmp_path / "dirty.ipynb") == [1]


def test_network_is_blocked_during_tests():
    import pytest_socket

    # The guard must be installed before anything tries a connection.
    assert socket.socket.connect is not pytest_socket._true_connect
    blocked = (pytest_socket.SocketBlockedError, pytest_socket.SocketConnectBlockedError)
    with pytest.warns(UserWarning), pytest.raises(blocked):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never reached


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make run" in readme
    first_screen = readme[:1500]  # the two commands come first
    assert "make run" in first_screen and "make test" in first_screen
