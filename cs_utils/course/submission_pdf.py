"""``submission.pdf``: the executed notebooks with their figures and answers, for a TA to grade.

``make submit`` writes it beside ``submission.zip`` (:func:`write_submission_pdf`), with
``submission_pages.json``, the question-to-page map for upload tools::

    {"pages": 84, "questions": {"q01_filters": {"notebook": "01_filters_and_tsne", "points": 2,
                                                "pages": [6]}, ...}}

Pages are numbered from 1. Every notebook that asks a question is rendered as it was saved
(outputs included: run it and save it first) by nbconvert's web PDF exporter
(:class:`~nbconvert.exporters.WebPDFExporter`), printed by the system Chromium through
Playwright (never a downloaded browser). Each notebook is cut into sections at its questions:
every question with its answer is printed on pages of its own, so a question starts a page and no
page holds two questions; the map counts the pages of every section, so it is exact. The page
never reaches the network: every request other than the page itself is refused (a formula shows
as its TeX source, which needs MathJax from the web).
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .questions import QUESTIONS, cell_answer, cell_question

__all__ = ["PAGE_MAP", "SUBMISSION_PDF", "ChromiumMissing", "chromium_path", "notebook_sections",
           "write_submission_pdf"]

SUBMISSION_PDF = "submission.pdf"
PAGE_MAP = "submission_pages.json"
_MARGIN = {"top": "0.5in", "bottom": "0.5in", "left": "0.45in", "right": "0.45in"}
#: Paper does not scroll: long code lines and printed text wrap instead of being cut at the margin.
_PRINT_CSS = ("<style>@media print { .jp-InputArea-editor pre, .jp-OutputArea-output pre, .highlight pre "
              "{ white-space: pre-wrap !important; overflow-wrap: anywhere; } }</style>")


class ChromiumMissing(RuntimeError):
    """No system Chromium to print with."""


def chromium_path() -> str:
    """The system Chromium: ``$CHROMIUM``, Debian's ``/usr/lib/chromium/chromium``, or ``chromium``
    (``chromium-browser``) on the PATH."""
    candidates = [os.environ.get("CHROMIUM", ""), "/usr/lib/chromium/chromium",
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ChromiumMissing("no Chromium found to print submission.pdf: install your system's "
                          "(Debian/Ubuntu: sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium")


def notebook_sections(notebook: dict) -> list[tuple[str | None, list[dict]]]:
    """The notebook's cells cut into ``(question id or None, cells)``: a question's section holds
    its question cell and the answer cells right after it (or the markdown cell after it, when a
    student's edit lost the answer cell's metadata); the sections between hold the rest, in order."""
    sections: list[tuple[str | None, list[dict]]] = [(None, [])]
    cells = notebook.get("cells", [])
    k = 0
    while k < len(cells):
        cell = cells[k]
        qid = cell_question(cell)
        if qid is None:
            if sections[-1][0] is not None:
                sections.append((None, []))
            sections[-1][1].append(cell)
            k += 1
            continue
        block = [cell]
        k += 1
        while k < len(cells) and cell_answer(cells[k]) == qid:
            block.append(cells[k])
            k += 1
        if len(block) == 1 and k < len(cells) and cells[k].get("cell_type") == "markdown" \
                and cell_question(cells[k]) is None and cell_answer(cells[k]) is None:
            block.append(cells[k])
            k += 1
        sections.append((qid, block))
    return [(qid, cells) for qid, cells in sections if cells]


class _Printer:
    """One headless Chromium page that prints HTML to PDF bytes, offline."""

    def __init__(self, chromium: str):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=chromium, headless=True)
        except Exception:
            self._playwright.stop()
            raise
        self._page = self._browser.new_page()
        self._page.emulate_media(media="print")
        self._page.route("**/*", self._only_the_page)
        self._folder = Path(tempfile.mkdtemp(prefix="submission-pdf-"))
        self._url = None

    def _only_the_page(self, route):
        if route.request.url == self._url:
            route.continue_()
        else:
            route.abort()

    def pdf(self, html: str) -> bytes:
        path = self._folder / "section.html"
        head = html.find("</head>")
        html = html[:head] + _PRINT_CSS + html[head:] if head >= 0 else _PRINT_CSS + html
        path.write_text(html, encoding="utf-8")
        self._url = path.as_uri()
        self._page.goto(self._url, wait_until="load")
        return self._page.pdf(format="Letter", print_background=True, margin=_MARGIN)

    def close(self):
        try:
            self._browser.close()
        finally:
            self._playwright.stop()
            shutil.rmtree(self._folder, ignore_errors=True)


def _exporter(printer: _Printer):
    from nbconvert.exporters import WebPDFExporter

    class SystemChromiumPDF(WebPDFExporter):
        """nbconvert's web PDF exporter, printing with the system Chromium opened once."""

        def run_playwright(self, html):
            return printer.pdf(html)

    return SystemChromiumPDF()


def write_submission_pdf(root: Path, out: Path | None = None, pages_json: Path | None = None, *,
                         chromium: str | None = None) -> dict:
    """Write ``submission.pdf`` and its page map (default: in ``root``) from ``root/notebooks``;
    return the map (with ``"seconds"``). Raises :class:`ChromiumMissing` without a Chromium."""
    import nbformat
    from pypdf import PdfReader, PdfWriter

    root = Path(root)
    out = Path(out) if out is not None else root / SUBMISSION_PDF
    pages_json = Path(pages_json) if pages_json is not None else root / PAGE_MAP
    start = time.perf_counter()
    stems = sorted({q.notebook for q in QUESTIONS.values()})
    printer = _Printer(chromium or chromium_path())
    writer = PdfWriter()
    questions, notebooks, page = {}, {}, 0
    try:
        exporter = _exporter(printer)
        for stem in stems:
            path = root / "notebooks" / f"{stem}.ipynb"
            if not path.is_file():
                continue
            notebook = nbformat.read(path, as_version=4)
            first = page + 1
            for qid, cells in notebook_sections(notebook):
                part = copy.copy(notebook)
                part.cells = cells
                data, _ = exporter.from_notebook_node(part)
                reader = PdfReader(io.BytesIO(data))
                count = len(reader.pages)
                writer.append(reader)
                if qid is not None and qid not in questions:
                    questions[qid] = {"notebook": stem, "points": QUESTIONS[qid].points,
                                      "pages": list(range(page + 1, page + count + 1))}
                page += count
            notebooks[stem] = [first, page]
    finally:
        printer.close()
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        writer.write(f)
    os.replace(tmp, out)
    result = {"pdf": out.name, "pages": page, "notebooks": notebooks,
              "questions": {qid: questions[qid] for qid in QUESTIONS if qid in questions},
              "missing": [qid for qid in QUESTIONS if qid not in questions]}
    tmp = pages_json.with_name(pages_json.name + ".part")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, pages_json)
    return {**result, "seconds": round(time.perf_counter() - start, 1)}
