"""Execute every notebook and render it to HTML, with an index page.

    python -m cs_utils.course.render [--notebooks notebooks] [--out build] [--timeout 1800]

Each ``NN_name.ipynb`` runs top to bottom in a fresh kernel (working directory:
the notebook's folder) and becomes ``OUT/NN_name.html``; ``OUT/index.html``
links them with their status and run time. A notebook that fails is still
rendered up to the failing cell, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RenderResult", "render_notebooks", "main"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class RenderResult:
    notebook: Path
    html: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _execute(path: Path, timeout: int, kernel_name: str):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        failed = [i for i, cell in enumerate(nb.cells, 1)
                  if any(out.get("output_type") == "error" for out in cell.get("outputs", []))]
        where = f"cell {failed[0]}: " if failed else ""
        error = _ANSI.sub("", f"{where}{err.ename}: {err.evalue}".strip())
    except Exception as err:  # kernel died, timeout, ...: report, render what ran
        error = f"{type(err).__name__}: {err}"
    return nb, error


def _to_html(nb) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def _index_page(results: list[RenderResult], notebooks_dir: Path) -> str:
    if results:
        rows = "\n".join(
            f"<tr><td><a href='{html.escape(r.html.name)}'>{html.escape(r.notebook.stem)}</a></td>"
            f"<td class='{'ok' if r.ok else 'fail'}'>{'ok' if r.ok else 'FAILED'}</td>"
            f"<td>{r.seconds:.1f} s</td><td>{html.escape(r.error or '')}</td></tr>"
            for r in results)
        body = ("<table><tr><th>notebook</th><th>status</th><th>run time</th><th>error</th></tr>\n"
                f"{rows}\n</table>")
    else:
        body = f"<p>No notebooks in <code>{html.escape(str(notebooks_dir))}</code> yet.</p>"
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            "<title>Visualizing and Understanding CNNs: notebooks</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}"
            ".ok{color:green}.fail{color:#b00;font-weight:bold}</style></head><body>"
            "<h1>Visualizing and Understanding CNNs</h1>"
            f"<p>Rendered {time.strftime('%Y-%m-%d %H:%M')}.</p>{body}</body></html>\n")


def render_notebooks(notebooks_dir="notebooks", out_dir="build", *, timeout: int = 1800,
                     kernel_name: str = "python3", log=print) -> list[RenderResult]:
    """Execute and render every ``*.ipynb`` in ``notebooks_dir`` (sorted) into ``out_dir``."""
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {str(notebooks_dir)!r} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        log(f"No notebooks in {notebooks_dir}/ yet: nothing to execute.")
    results = []
    for path in paths:
        log(f"executing {path} ...")
        start = time.perf_counter()
        nb, error = _execute(path.resolve(), timeout, kernel_name)
        seconds = time.perf_counter() - start
        target = out_dir / f"{path.stem}.html"
        target.write_text(_to_html(nb), encoding="utf-8")
        results.append(RenderResult(path, target, seconds, error))
        status = "ok" if error is None else f"FAILED: {error}"
        log(f"  {path.name}: {status} ({seconds:.1f} s) -> {target}")
    index = out_dir / "index.html"
    index.write_text(_index_page(results, notebooks_dir), encoding="utf-8")
    log(f"index: {index}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", default="notebooks", help="folder of .ipynb files")
    parser.add_argument("--out", default="build", help="folder for the HTML pages")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        results = render_notebooks(args.notebooks, args.out, timeout=args.timeout)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} notebooks failed: "
              + ", ".join(r.notebook.name for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
