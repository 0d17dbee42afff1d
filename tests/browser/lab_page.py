"""Driving a notebook in JupyterLab through Playwright: open, run all, read what the page shows.

Everything is read from the page as a person sees it: the prompts (``[*]:`` while a cell
waits or runs), the text of each output, the images. Waits are long (the machine may be
busy) and every failure says what the page showed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CellOutputs", "LabPage", "NotebookRunError"]

#: The JavaScript that reads every code cell: prompt, outputs (mime type, text), images.
_READ_CELLS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell')).map((cell, i) => ({
  index: i,
  prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
  source: (cell.querySelector('.jp-InputArea-editor') || {}).innerText || '',
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(o => ({
    mime: o.getAttribute('data-mime-type') || '',
    text: o.innerText || '',
  })),
  images: Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(img => ({
    width: img.naturalWidth, height: img.naturalHeight, complete: img.complete,
  })),
}))"""


#: True once the notebook shows its code cells and the status bar an idle kernel (not "No Kernel").
_KERNEL_IDLE = """() => {
  const bar = document.querySelector('#jp-main-statusbar');
  const text = bar ? bar.innerText : '';
  return document.querySelectorAll('.jp-Notebook .jp-CodeCell').length > 0
    && /\\|\\s*Idle/.test(text) && !/No Kernel/.test(text);
}"""


class NotebookRunError(AssertionError):
    """A notebook did not finish in the browser; the message says where it stood."""


@dataclass
class CellOutputs:
    """What one code cell shows after a run."""

    index: int
    prompt: str
    source: str
    outputs: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.prompt.strip() not in ("", "[ ]:", "[*]:")

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs if o["mime"].endswith("stdout"))

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs if o["mime"].endswith("stderr"))

    @property
    def errors(self) -> list[str]:
        """Tracebacks shown by the cell (JupyterLab renders errors as stderr text with a traceback)."""
        return [
            o["text"]
            for o in self.outputs
            if o["mime"].endswith(("stderr", "error")) and "Traceback" in o["text"]
        ]

    def describe(self) -> str:
        first = self.source.strip().splitlines()[0] if self.source.strip() else ""
        return f"code cell {self.index} {self.prompt} `{first[:70]}`"


class LabPage:
    """One Playwright page on one JupyterLab server (``lab`` is a ``LabServer``)."""

    def __init__(self, page, lab, screenshots: Path):
        self.page, self.lab, self.screenshots = page, lab, Path(screenshots)
        self.screenshots.mkdir(parents=True, exist_ok=True)

    def open_notebook(self, path: str, timeout: float = 180.0) -> None:
        """Open ``path`` in JupyterLab's single-document view; wait until its kernel is idle."""
        url = self.lab.lab_url(path).replace("/lab/tree/", "/doc/tree/", 1)
        self.page.goto(url, timeout=timeout * 1000)
        self._wait_for_js(
            _KERNEL_IDLE,
            timeout,
            f"the cells of {path} and an idle kernel in the status bar "
            f"(the kernel did not start? see {self.lab.log})",
        )

    def _wait_for_js(self, expression: str, timeout: float, what: str) -> None:
        try:
            self.page.wait_for_function(expression, timeout=timeout * 1000, polling=500)
        except Exception as exc:  # noqa: BLE001 - any Playwright timeout becomes an explained failure
            shot = self.screenshot("failure_waiting")
            raise NotebookRunError(
                f"waited {timeout:.0f} s for {what}{self.dialog_text()}; screenshot {shot}\n"
                f"{self.lab.log_tail(15)}"
            ) from exc

    def wait_until(self, what: str, expression: str, timeout: float = 300.0) -> None:
        """Wait until the JavaScript ``expression`` (a function) is true; fail saying ``what`` was awaited."""
        self._wait_for_js(expression, timeout, what)

    def dialog_text(self) -> str:
        """``"; a dialog says: ..."`` when JupyterLab shows a (blocking) dialog, else ``""``."""
        dialogs = self.page.locator(".jp-Dialog-content")
        if dialogs.count() == 0:
            return ""
        return "; a dialog says: " + " | ".join(" ".join(t.split()) for t in dialogs.all_inner_texts())

    def run_all(self, timeout: float = 1200.0, poll: float = 2.0) -> list[CellOutputs]:
        """Run > Run All Cells from the menu; wait until no cell waits or runs; return every code cell."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        self._wait_for_js(
            "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))"
            ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))",
            120,
            "Run > Run All Cells to start the first cell",
        )
        start = time.monotonic()
        # Run all marks every cell [*] at once; wait until the first one shows a number or the
        # queue is cleared, then until nothing waits or runs, twice in a row.
        quiet, last_report, cells = 0, start, []
        while True:
            cells = self.cells()
            busy = [c for c in cells if c.prompt.strip() == "[*]:"]
            started = any(c.ran for c in cells)
            quiet = quiet + 1 if started and not busy else 0
            if quiet >= 2:
                return cells
            now = time.monotonic()
            if now - start > timeout:
                shot = self.screenshot("failure_run_all")
                running = busy[0].describe() if busy else "none"
                raise NotebookRunError(
                    f"Run All Cells did not finish in {timeout:.0f} s: {sum(c.ran for c in cells)} of "
                    f"{len(cells)} code cells ran, still running or waiting: {len(busy)} (first: {running})"
                    f"{self.dialog_text()}; screenshot {shot}\n{self.lab.log_tail(15)}"
                )
            if now - last_report > 60:
                print(
                    f"  ... {now - start:.0f} s: {sum(c.ran for c in cells)} of {len(cells)} code cells ran",
                    flush=True,
                )
                last_report = now
            time.sleep(poll)

    def type_answer(self, question_id: str, text: str) -> None:
        """Type ``text`` into the answer cell under written question ``question_id`` as a student
        does: double-click the rendered cell, select its text, type, Shift+Enter to render it."""
        index = self.page.evaluate(
            "(qid) => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'))"
            ".findIndex(c => c.classList.contains('jp-MarkdownCell') && "
            "c.textContent.includes('Question ' + qid + ' ('))",
            question_id,
        )
        if index < 0:
            raise NotebookRunError(f"no cell shows 'Question {question_id}'")
        cell = self.page.locator(".jp-Notebook .jp-Cell").nth(index + 1)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-MarkdownOutput").dblclick()
        editor = cell.locator(".cm-content")
        editor.wait_for(state="visible", timeout=30_000)
        editor.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Shift+Enter")
        cell.locator(".jp-MarkdownOutput", has_text=text).wait_for(state="visible", timeout=30_000)

    def save(self) -> None:
        """File > Save (Ctrl+S in command mode); wait until the document is no longer marked dirty."""
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        self._wait_for_js(
            "() => !document.querySelector('.jp-mod-current.jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty')",
            60,
            "the notebook to be saved",
        )

    def cells(self) -> list[CellOutputs]:
        return [CellOutputs(**c) for c in self.page.evaluate(_READ_CELLS)]

    def code_cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-CodeCell").nth(index)

    def screenshot(self, name: str, cell: int | None = None) -> Path:
        """Save the window (scrolled to code cell ``cell`` when given) as ``<screenshots>/<name>.png``."""
        if cell is not None:
            self.code_cell(cell).evaluate("e => e.scrollIntoView({block: 'start'})")
            self.page.wait_for_timeout(500)
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path
