"""Execute every notebook and render it to HTML, with an index page.

    python -m cs_utils.instructor.render [--notebooks notebooks] [--out build] [--timeout 1800] [--jobs N]

Each ``NN_name.ipynb`` runs top to bottom in a fresh kernel (working directory:
the notebook's folder) and becomes ``OUT/NN_name.html``; ``OUT/index.html``
links them with their status and run time. A notebook that fails is still
rendered up to the failing cell, the others still run, and the exit status is 1.

``--jobs`` kernels run at once (default: one per two cores, at least 2 on a machine
with 2 or more cores), each with ``cores // jobs`` threads (``OMP_NUM_THREADS``).
On a small CPU two one-thread kernels get more done than one two-thread kernel:
PyTorch's convolutions at batch 1 scale poorly across threads. The notebooks start
longest first, by the run times the last render wrote to ``OUT/timings.json`` (those
with no recorded time before all others).
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RenderResult", "default_jobs", "render_notebooks", "main"]

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


def default_jobs() -> int:
    """Kernels to run at once: one per two cores, and 2 on a machine with 2 or 3 cores."""
    cores = os.cpu_count() or 1
    return 1 if cores < 2 else max(2, cores // 2)


def _render_one(path: Path, target: Path, timeout: int, kernel_name: str, threads: int | None):
    """Execute ``path`` and write its HTML to ``target``; returns ``(seconds, error)``. Runs in a
    worker process whose environment the kernel inherits (its thread count)."""
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
    start = time.perf_counter()
    nb, error = _execute(path.resolve(), timeout, kernel_name)
    seconds = time.perf_counter() - start
    target.write_text(_to_html(nb), encoding="utf-8")
    return seconds, error


def _read_timings(out_dir: Path) -> dict[str, float]:
    try:
        timings = json.loads((out_dir / "timings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(timings, dict):
        return {}
    return {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}


def render_notebooks(notebooks_dir="notebooks", out_dir="build", *, timeout: int = 1800,
                     kernel_name: str = "python3", jobs: int | None = None,
                     log=print) -> list[RenderResult]:
    """Execute and render every ``*.ipynb`` in ``notebooks_dir`` into ``out_dir``, ``jobs``
    at a time (default :func:`default_jobs`). Returns the results in file-name order."""
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {str(notebooks_dir)!r} does not exist")
    jobs = default_jobs() if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        log(f"No notebooks in {notebooks_dir}/ yet: nothing to execute.")
    jobs = max(1, min(jobs, len(paths)))
    # With one kernel at a time, its threads are left to PyTorch's default, as before.
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    previous = _read_timings(out_dir)
    # longest first; a notebook with no recorded time (new, or failed last time) first of all: it may be
    # the longest, and started last it would leave one kernel running alone at the end
    order = sorted(paths, key=lambda p: -previous.get(p.name, float("inf")))   # stable
    targets = {p: out_dir / f"{p.stem}.html" for p in paths}
    done: dict[Path, RenderResult] = {}

    def finish(path, seconds, error):
        done[path] = RenderResult(path, targets[path], seconds, error)
        status = "ok" if error is None else f"FAILED: {error}"
        log(f"  {path.name}: {status} ({seconds:.1f} s) -> {targets[path]}")

    if jobs == 1:
        for path in order:
            log(f"executing {path} ...")
            finish(path, *_render_one(path, targets[path], timeout, kernel_name, threads))
    else:
        log(f"executing {len(paths)} notebooks, {jobs} at a time, {threads} thread(s) each ...")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {path: pool.submit(_render_one, path, targets[path], timeout, kernel_name, threads)
                       for path in order}
            for path in order:
                try:
                    finish(path, *futures[path].result())
                except Exception as err:  # the worker itself died: report, keep the others
                    finish(path, 0.0, f"{type(err).__name__}: {err}")
    results = [done[p] for p in paths]
    timings = {**previous, **{r.notebook.name: round(r.seconds, 1) for r in results if r.ok}}
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(_index_page(results, notebooks_dir), encoding="utf-8")
    log(f"index: {index}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", default="notebooks", help="folder of .ipynb files")
    parser.add_argument("--out", default="build", help="folder for the HTML pages")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"notebooks executed at once (default {default_jobs()} here)")
    args = parser.parse_args(argv)
    try:
        results = render_notebooks(args.notebooks, args.out, timeout=args.timeout, jobs=args.jobs)
    except (FileNotFoundError, ValueError) as err:
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
