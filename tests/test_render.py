import nbformat

from cs_utils import render


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_renders_every_notebook_with_index(tmp_path):
    notebooks, out = tmp_path / "nb", tmp_path / "build"
    notebooks.mkdir()
    _notebook(notebooks / "01_ok.ipynb", "print(6 * 7)")
    _notebook(notebooks / "02_fails.ipynb", "x = 1", "raise ValueError('planned failure')", "print('never')")
    lines = []
    results = render.render_notebooks(notebooks, out, timeout=120, log=lines.append)
    assert [r.notebook.name for r in results] == ["01_ok.ipynb", "02_fails.ipynb"]
    assert results[0].ok and not results[1].ok and "planned failure" in results[1].error
    assert "42" in (out / "01_ok.html").read_text()
    assert "planned failure" in (out / "02_fails.html").read_text()
    index = (out / "index.html").read_text()
    assert "01_ok.html" in index and "02_fails.html" in index and "FAILED" in index
    assert render.main(["--notebooks", str(notebooks), "--out", str(out), "--timeout", "120"]) == 1


def test_no_notebooks_succeeds_and_says_so(tmp_path, capsys):
    (tmp_path / "nb").mkdir()
    assert render.main(["--notebooks", str(tmp_path / "nb"), "--out", str(tmp_path / "b")]) == 0
    assert "No notebooks" in capsys.readouterr().out
    assert "No notebooks" in (tmp_path / "b" / "index.html").read_text()
    assert render.main(["--notebooks", str(tmp_path / "missing")]) == 2
