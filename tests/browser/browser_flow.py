"""``make browser-test``: the student flow in JupyterLab, in Debian's Chromium driven by Playwright.

Not part of ``make test`` (it starts JupyterLab servers and runs notebooks in the browser; ``make
browser-test`` installs Chromium when missing). Run it as the target does::

    make student
    CS_UTILS_FAST=1 .venv/bin/python -m pytest tests/browser/browser_flow.py -v

1. The student release (build/student): notebook 02, Run All Cells; the first check cell prints
   ``FAIL saliency_map`` with its hint, which proves the kernel imports the release's
   ``cs_utils`` (the solution tree would print PASS).
2. The solution tree (a copy of notebooks/ in build/browser/, so a run never writes into the
   committed notebooks): notebook 02, Run All Cells; every cell ran, every check says PASS, no
   traceback anywhere, the figures are images.
3. A written answer: in a copy of the release, an answer typed into a question's cell of notebook
   01 and saved; ``make submit`` writes submission.pdf, and the typed text is on the pages that
   submission_pages.json gives for that question, and on no other page.
4. build/index.html of ``make run``, when present: every notebook row says ok.

Screenshots go to build/screenshots/; the JupyterLab logs to build/browser/. Kernels run at
the fast budget (CS_UTILS_FAST=1) with the network blocked (tests/ipython). Chromium is found
as ``$CHROMIUM``, /usr/lib/chromium/chromium or ``chromium`` on the PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from lab_page import LabPage
from lab_server import LabServer
from playwright.sync_api import sync_playwright

from cs_utils.course.questions import QUESTIONS, read_answers
from cs_utils.course.submission_pdf import chromium_path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
SCREENSHOTS = BUILD / "screenshots"
STUDENT = BUILD / "student"
NOTEBOOK = "notebooks/02_saliency_and_occlusion.ipynb"
RUN_TIMEOUT = float(os.environ.get("BROWSER_TEST_RUN_TIMEOUT", "1500"))  # seconds for one Run All Cells
KERNEL_ENV = {
    "CS_UTILS_FAST": "1",
    "IPYTHONDIR": str(ROOT / "tests" / "ipython"),
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}

# A CI timeout or Ctrl-C sends SIGTERM/SIGINT: exit through the `with` blocks, which stop the servers.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def lab_page(browser, lab: LabServer) -> LabPage:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    return LabPage(page, lab, SCREENSHOTS)


def check_cells(cells):
    return [c for c in cells if "check_exercise(" in c.source]


def test_student_release_fails_the_first_check_with_its_hint(browser):
    assert (STUDENT / NOTEBOOK).is_file(), f"{STUDENT / NOTEBOOK} is missing: run `make student` first"
    with LabServer(
        STUDENT, python_path=STUDENT, log=BUILD / "browser" / "student-lab.log", env=KERNEL_ENV
    ) as lab:
        page = lab_page(browser, lab)
        page.open_notebook(NOTEBOOK)
        cells = page.run_all(timeout=RUN_TIMEOUT)
        first_check = check_cells(cells)[0]
        shot = page.screenshot("student_02_saliency_and_occlusion", cell=first_check.index)
        print(f"screenshot {shot}")
    assert 'check_exercise("saliency_map")' in first_check.source
    assert first_check.ran, f"the check cell did not run: {first_check.describe()}"
    line = first_check.stdout.strip().splitlines()[0] if first_check.stdout.strip() else ""
    assert line.startswith("FAIL saliency_map"), (
        f"the student's check printed {first_check.stdout!r}; a PASS means the kernel imported the solution "
        f"tree's cs_utils instead of {STUDENT / 'cs_utils'}"
    )
    assert "write saliency_map in cs_utils/saliency.py" in line, f"no hint in {line!r}"
    assert f"{STUDENT / 'cs_utils'}{os.sep}" in "".join(first_check.errors), (
        f"the traceback does not run through {STUDENT / 'cs_utils'}"
    )
    # Run All stops at the failing check: nothing after it ran, nothing before it failed.
    before = [c for c in cells if c.index < first_check.index]
    assert all(c.ran and not c.errors for c in before), [
        c.describe() for c in before if not c.ran or c.errors
    ]
    assert not any(c.ran for c in cells if c.index > first_check.index)


@pytest.fixture(scope="module")
def solution_lab():
    """JupyterLab on a copy of notebooks/ (a run never writes into the committed notebooks);
    the kernels import cs_utils from this tree."""
    served = BUILD / "browser" / "solution"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(ROOT / "notebooks", served / "notebooks")
    with LabServer(
        served, python_path=ROOT, log=BUILD / "browser" / "solution-lab.log", env=KERNEL_ENV
    ) as lab:
        yield lab


def test_solution_notebook_passes_every_check_and_shows_its_figures(browser, solution_lab):
    page = lab_page(browser, solution_lab)
    page.open_notebook(NOTEBOOK)
    cells = page.run_all(timeout=RUN_TIMEOUT)
    checks = check_cells(cells)
    page.screenshot("solution_02_saliency_and_occlusion", cell=checks[0].index)
    figure_cells = [c for c in cells if c.images]
    page.screenshot("solution_02_figure", cell=figure_cells[0].index if figure_cells else None)
    page.screenshot("solution_02_end", cell=cells[-1].index)
    page.page.close()
    not_run = [c.describe() for c in cells if not c.ran]
    assert not not_run, f"cells that did not run: {not_run}"
    failures = {c.describe(): c.errors[0][-800:] for c in cells if c.errors}
    assert not failures, f"tracebacks in the page: {failures}"
    names = [re.search(r'check_exercise\("(\w+)"\)', c.source).group(1) for c in checks]
    assert names == ["saliency_map", "occlusion_map", "guided_relu_grad", "grad_cam", "integrated_gradients"]
    for cell, name in zip(checks, names):
        assert cell.stdout.startswith(f"PASS {name} (rel. error"), (
            f"{cell.describe()} printed {cell.stdout!r}"
        )
    stderr = {c.describe(): c.stderr[:300] for c in cells if c.stderr.strip()}
    assert not stderr, f"cells wrote to stderr: {stderr}"
    plotting = [c for c in cells if re.search(r"^fig\b|^\s*fig, ax", c.source, re.M)]
    assert plotting, "notebook 02 has no plotting cells any more: update this test"
    without = [c.describe() for c in plotting if not c.images]
    assert not without, f"plotting cells without an image: {without}"
    images = [img for c in cells for img in c.images]
    assert all(img["complete"] and img["width"] >= 200 and img["height"] >= 100 for img in images), images
    print(f"{len(cells)} code cells ran, {len(checks)} checks PASS, {len(images)} images")


def test_explorer_redraws_when_a_photo_and_a_method_are_chosen(browser, solution_lab):
    page = lab_page(browser, solution_lab)
    page.open_notebook("notebooks/00_explore.ipynb")
    cells = page.run_all(timeout=RUN_TIMEOUT)
    failures = {c.describe(): c.errors[0][-800:] for c in cells if c.errors}
    assert not failures, f"tracebacks in the page: {failures}"
    image = page.page.locator("img.widget-image").first
    image.wait_for(state="visible", timeout=120_000)
    page.screenshot("explorer_before", cell=0)
    first = image.screenshot()

    def dropdown(label):
        return page.page.locator(f".widget-dropdown:has(> label:text-is('{label}')) select").first

    dropdown("photo").select_option("imagenet_16")
    page.wait_until(
        "the class list of the Dalmatian photo",
        "() => Array.from(document.querySelectorAll("
        "'.widget-dropdown select')).some(s => s.selectedOptions.length && "
        "/^Dalmatian\\s\\(/.test(s.selectedOptions[0].text))",  # ipywidgets writes non-breaking spaces
        timeout=300,
    )
    page.wait_until("the saliency map of the new photo", _STATUS_STARTS.format("saliency: "), timeout=300)
    page.page.wait_for_timeout(1000)  # the browser draws the new image
    photo = image.screenshot()
    dropdown("method").select_option("Grad-CAM")
    page.wait_until("the Grad-CAM map", _STATUS_STARTS.format("Grad-CAM: "), timeout=300)
    page.page.wait_for_timeout(1000)
    gradcam = image.screenshot()
    page.screenshot("explorer_after", cell=0)
    page.page.close()
    assert photo != first, "choosing another photo did not change the explorer's image"
    assert gradcam != photo, "choosing Grad-CAM did not change the explorer's image"


#: JavaScript: some ipywidgets label starts with the text filled in.
_STATUS_STARTS = (
    "() => Array.from(document.querySelectorAll('.widget-label'))"
    ".some(l => l.textContent.replace(/\\s/g, ' ').startsWith('{}'))"
)


ANSWERED = "q01_filters"
TYPED = "Typed in the browser 4711: the first layer's weights live in pixel space."


def test_an_answer_typed_in_lab_is_on_its_questions_page_of_submission_pdf(browser):
    from pypdf import PdfReader

    served = BUILD / "browser" / "answers"
    shutil.rmtree(served, ignore_errors=True)
    left_over = ("submission.zip", "submission.pdf", "submission_pages.json")
    shutil.copytree(STUDENT, served, ignore=shutil.ignore_patterns(".venv", "__pycache__", *left_over))
    notebook = f"notebooks/{QUESTIONS[ANSWERED].notebook}.ipynb"
    log = BUILD / "browser" / "answers-lab.log"
    with LabServer(served, python_path=served, log=log, env=KERNEL_ENV) as lab:
        page = lab_page(browser, lab)
        page.open_notebook(notebook)
        page.type_answer(ANSWERED, TYPED)
        page.save()
        page.screenshot("answer_typed")
        page.page.close()
    answers = read_answers(served / "notebooks")
    assert answers[ANSWERED] == TYPED, f"the saved notebook holds {answers[ANSWERED]!r}"
    assert [q for q, a in answers.items() if a] == [ANSWERED]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    run = subprocess.run(["make", "--no-print-directory", "submit", f"PY={sys.executable}"], cwd=served,
                         env={**env, "PYTHONPATH": str(served), "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    print(run.stdout.strip().splitlines()[-1])
    pages = json.loads((served / "submission_pages.json").read_text())
    reader = PdfReader(served / "submission.pdf")
    texts = [" ".join(unicodedata.normalize("NFKC", p.extract_text()).split()) for p in reader.pages]
    assert len(texts) == pages["pages"]
    holding = [n for n, text in enumerate(texts, 1) if TYPED in text]
    mapped = pages["questions"][ANSWERED]["pages"]
    assert holding and holding == mapped, (holding, mapped)
    assert texts[holding[0] - 1].startswith(f"Question {ANSWERED} ("), texts[holding[0] - 1][:120]
    print(f"submission.pdf: {pages['pages']} pages; {ANSWERED} on page {holding[0]}")


def test_rendered_index_says_ok_for_every_notebook(browser):
    index = BUILD / "index.html"
    if not index.is_file():
        print(f"{index} is absent (`make run` writes it): nothing to check")
        return
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(index.as_uri())
    rows = page.eval_on_selector_all(
        "table tr", "rows => rows.slice(1).map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )
    page.screenshot(path=str(SCREENSHOTS / "index.png"))
    page.close()
    rendered = sorted(p.stem for p in BUILD.glob("[0-9][0-9]_*.html"))
    assert [r[0] for r in rows] == rendered, f"index rows {[r[0] for r in rows]} vs rendered pages {rendered}"
    bad = {r[0]: r[1:] for r in rows if r[1] != "ok"}
    assert not bad, f"notebooks not ok in {index}: {bad}"
