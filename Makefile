# Two commands do everything on a fresh machine:
#   make run    set up, execute every notebook (full budget), render HTML into build/
#   make test   set up, lint, run the unit tests and every notebook (fast budget)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# Tests run in the fast budget; notebook kernels load tests/ipython's startup file,
# which blocks network connections as pytest-socket does for the unit tests.
TEST_ENV  := CS_UTILS_FAST=1 MPLBACKEND=Agg IPYTHONDIR=$(CURDIR)/tests/ipython
# The suite runs one pytest worker per core (pytest-xdist), each test file and each notebook whole
# on one worker with one thread (xdist hands out the files with the most tests first; the slowest
# files first, or a third worker, measured no faster).
PARALLEL  := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
XDIST     := -n auto --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help setup system test unit notebooks lint run lab strip clean weights checks student gradescope bench

help:
	@echo "make run     set up, execute every notebook at the full budget, render build/index.html"
	@echo "make test    set up, lint, unit tests, and every notebook under nbval (fast budget)"
	@echo "make setup   create .venv/ with the pinned dependencies and cs_utils installed editable"
	@echo "make unit    unit tests only (fast budget)"
	@echo "make lint    ruff over cs_utils, tests and notebooks"
	@echo "make lab     open JupyterLab on notebooks/"
	@echo "make demo    open JupyterLab on notebooks/00_explore.ipynb: the live explorer for a lecture"
	@echo "make strip   remove outputs from notebooks/*.ipynb before committing"
	@echo "make weights train the fast-style networks of notebook 06 again into data/fast_style/ (slow)"
	@echo "make topics-weights  train notebook 06's decoder, U-Net and adversarial networks into data/topics/"
	@echo "make checks  regenerate the golden files data/checks/*.npz of the exercises from the solutions"
	@echo "make student write the student release (solutions replaced by TODOs) into build/student/"
	@echo "make gradescope  write Gradescope's autograder zip (grader + hidden reference) to build/"
	@echo "make bench   speed benchmarks: medians and ratios to the physical limit (not tests)"
	@echo "make browser-test  the student flow in JupyterLab in Chromium (apt-get install chromium); screenshots in build/screenshots/"
	@echo "make clean   remove build/ and caches (keeps .venv/)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

# The system packages the tests use: bubblewrap (the grader's sandbox) and Chromium (make submit's PDF
# and the browser test). Installed with apt-get when missing and running as root (as CI does);
# otherwise the command to run is printed, and the tests that need them fail saying what is missing.
system:
	@missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || test -x /usr/lib/chromium/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "the tests need$$missing: sudo apt-get install$$missing"; fi; \
	fi

test: setup system lint
	$(TEST_ENV) $(PARALLEL) $(PY) -m pytest $(XDIST) $(NOTEBOOKS) tests --nbval-lax --nbval-cell-timeout=600

unit: setup
	$(TEST_ENV) $(PARALLEL) $(PY) -m pytest $(XDIST) tests

notebooks: setup
	$(TEST_ENV) $(PARALLEL) $(PY) -m pytest $(XDIST) $(NOTEBOOKS) --nbval-lax --nbval-cell-timeout=600

lint: setup
	$(PY) -m ruff check cs_utils tests notebooks

run: setup
	$(PY) -m cs_utils.instructor.render --notebooks notebooks --out build

lab: setup
	$(VENV)/bin/jupyter lab notebooks

.PHONY: demo browser-test
demo: setup
	$(VENV)/bin/jupyter lab notebooks/00_explore.ipynb

strip: setup
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace $(NOTEBOOKS)

# The fast-style networks of notebook 06, one after another on one thread (resumes an interrupted run).
weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m cs_utils.instructor.train_weights

checks: setup
	OMP_NUM_THREADS=1 $(PY) -c 'import sys; from cs_utils.course.grading import main; sys.exit(main(["--generate"]))'

student: setup
	$(PY) -m cs_utils.instructor.release --out build/student

# The autograder for Gradescope: setup.sh, run_autograder, the grader and its reference; SEED=n fixes
# the seed of the hidden cases (default: drawn when the zip is built, stored in it).
gradescope: setup
	$(PY) -m cs_utils.instructor.gradescope build --out build/gradescope_autograder.zip $(if $(SEED),--seed $(SEED))

# bench_attribution.py also times Captum (the `bench` extra) when it can be installed, else skips those rows.
bench: setup
	$(PY) -c 'import captum' 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q -e '.[bench]' \
		|| echo "captum could not be installed: bench_attribution.py runs without the Captum rows"
	$(PY) benchmarks/bench_saliency.py
	$(PY) benchmarks/bench_style.py
	$(PY) benchmarks/bench_folded_techniques.py
	$(PY) benchmarks/bench_attribution.py
	$(PY) benchmarks/bench_class_viz.py

# The student flow in a real browser: JupyterLab on a free local port, Debian's Chromium driven by
# Playwright (in requirements.txt for make submit's PDF; it never downloads a browser). See
# tests/browser/browser_flow.py.
CHROMIUM ?= $(shell command -v /usr/lib/chromium/chromium chromium chromium-browser 2>/dev/null | head -n1)

browser-test: student system
	@test -n "$(CHROMIUM)" || { echo "Chromium is missing: apt-get install chromium (or set CHROMIUM=/path/to/chromium)"; exit 1; }
	rm -rf build/screenshots
	CHROMIUM=$(CHROMIUM) $(TEST_ENV) $(PY) -m pytest tests/browser/browser_flow.py -v -s -p no:cacheprovider

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# The small networks of notebook 06's later sections (decoders, U-Net, adversarial stylizer), a few
# minutes each on one thread; data/topics/record.json records each one's training time and losses.
.PHONY: topics-weights
topics-weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m cs_utils.instructor.train_topics
