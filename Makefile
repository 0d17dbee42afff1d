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

.DEFAULT_GOAL := help
.PHONY: help setup test unit notebooks lint run lab strip clean weights checks student bench

help:
	@echo "make run     set up, execute every notebook at the full budget, render build/index.html"
	@echo "make test    set up, lint, unit tests, and every notebook under nbval (fast budget)"
	@echo "make setup   create .venv/ with the pinned dependencies and cs_utils installed editable"
	@echo "make unit    unit tests only (fast budget)"
	@echo "make lint    ruff over cs_utils, tests and notebooks"
	@echo "make lab     open JupyterLab on notebooks/"
	@echo "make strip   remove outputs from notebooks/*.ipynb before committing"
	@echo "make weights train the fast-style networks of notebook 06 again into data/fast_style/ (slow)"
	@echo "make checks  regenerate the golden files data/checks/*.npz of the exercises from the solutions"
	@echo "make student write the student release (solutions replaced by TODOs) into build/student/"
	@echo "make bench   speed benchmarks: medians and ratios to the physical limit (not tests)"
	@echo "make clean   remove build/ and caches (keeps .venv/)"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

test: setup lint
	$(TEST_ENV) $(PY) -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-cell-timeout=600

unit: setup
	$(TEST_ENV) $(PY) -m pytest tests

notebooks: setup
	$(TEST_ENV) $(PY) -m pytest $(NOTEBOOKS) --nbval-lax --nbval-cell-timeout=600

lint: setup
	$(PY) -m ruff check cs_utils tests notebooks

run: setup
	$(PY) -m cs_utils.render --notebooks notebooks --out build

lab: setup
	$(VENV)/bin/jupyter lab notebooks

strip: setup
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace $(NOTEBOOKS)

# The fast-style networks of notebook 06, one after another on one thread (resumes an interrupted run).
weights: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m cs_utils.train_weights

checks: setup
	OMP_NUM_THREADS=1 $(PY) -c 'import sys; from cs_utils.grading import main; sys.exit(main(["--generate"]))'

student: setup
	$(PY) -m cs_utils.release --out build/student

# bench_attribution.py also times Captum (the `bench` extra) when it can be installed, else skips those rows.
bench: setup
	$(PY) -c 'import captum' 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q -e '.[bench]' \
		|| echo "captum could not be installed: bench_attribution.py runs without the Captum rows"
	$(PY) benchmarks/bench_saliency.py
	$(PY) benchmarks/bench_style.py
	$(PY) benchmarks/bench_attribution.py
	$(PY) benchmarks/bench_class_viz.py

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
