# Reasoning Lab — `make book` builds the HTML book, `make test` runs every test. Both install first.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export REASONING_LAB_QUIET := 1
# The book's models are tiny: one CPU thread each is as fast as two, and far faster when the cores are busy.
export REASONING_LAB_THREADS ?= 1
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# The install skips byte-compiling every installed module (--no-compile: half the install's time, most of
# it in modules no command imports); Python compiles what is imported, once, into __pycache__, which it
# may only do where PYTHONDONTWRITEBYTECODE is not set.
unexport PYTHONDONTWRITEBYTECODE

NOTEBOOKS := $(wildcard notebooks/*.md)
# Notebooks (and unit-test workers) at once: one per core, each kernel on one thread.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
EXP ?=
ARGS ?=

.PHONY: install assets book test unit notebooks nbtest browser lab lab-check wheel-check bench run clean help gpu-check test-slow

help:
	@echo "make book   - install, execute the notebooks at their default size (one per core), build _build/html"
	@echo "make test   - install, unit tests, notebook tests (nbval), book build checks"
	@echo "make lab    - JupyterLab on the notebooks (MyST .md open as notebooks, paired with .ipynb)"
	@echo "make run EXP=reversal-curse ARGS='-p seed=3 --out runs/x'   - one experiment via the CLI"
	@echo "make bench  - benchmarks (print ratios against references measured in the same run)"
	@echo "make gpu-check - CUDA paths and paper-preset timings on a GPU (CPU mode without one); JSON in"
	@echo "             runs/gpu-check/ (GPU_CHECK_OUT=DIR). No make: PYTHONPATH=lib python3 bench/gpu_check.py --out DIR"
	@echo "make test-slow - every paper preset's model at full size, one training step each on the CPU (minutes)"
	@echo "make clean  - remove build outputs (keeps .venv and runs/)"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e ".[book,test,lab]"
	@touch $(STAMP)

# MathJax, requirejs and the ipywidgets HTML manager for the self-contained HTML book: pinned npm
# packages unpacked into _vendor/ (git-ignored); quick when already there, fails clearly without npm.
assets:
	@$(PYTHON) tools/fetch_assets.py

# The HTML from the execution cache: the notebooks have been executed (in parallel) before; a build that
# had to execute one itself (one at a time) fails. The log is kept in _build/book-build.log.
define build_from_cache
	@mkdir -p _build
	set -o pipefail; $(BIN)/jupyter-book build . --all -W --keep-going 2>&1 | tee _build/book-build.log
	@! grep "Executing notebook" _build/book-build.log || \
	    { echo "the book build executed notebooks that were not in the execution cache"; exit 1; }
endef

# Every notebook not yet in the execution cache runs, $(JOBS) at a time, longest first; a notebook that
# fails is named with its cell, its traceback kept in _build/logs/. Then the HTML is built from the cache.
book: install assets
	$(BIN)/python tools/execute_notebooks.py --jobs $(JOBS) $(NOTEBOOKS)
	$(build_from_cache)
	@echo "Book: $(abspath _build/html/index.html)"

# Unit-test workers: one more than the cores, since several tests mostly wait (a Slurm cluster's scheduler,
# a Jupyter server, a sweep's subprocesses) and a waiting worker would leave its core idle. The longest
# tests come first (tests/conftest.py) and are dealt out one at a time (--dist load --maxschedchunk 1).
UNIT_JOBS ?= $(shell echo $$(( $(JOBS) + 1 )))
unit: install
	$(BIN)/python -m pytest -n $(UNIT_JOBS) --dist load --maxschedchunk 1 tests

# Generated .ipynb copies of the MyST sources (git-ignored), for Jupyter users and nbval.
notebooks: install
	$(BIN)/jupytext --to ipynb --update-metadata '{"jupytext": {"formats": "ipynb,md:myst"}}' $(NOTEBOOKS) >/dev/null

# Notebook tests: nbval executes every notebook once (a notebook that raises fails), $(JOBS) notebooks at
# a time (pytest-xdist, each notebook whole on one worker, longest first); the plugin hands the executed
# notebooks to the book's execution cache, and the metrics of every default run are checked against what
# the book claims (tests/expectations.py). The book build then reuses the cached outputs.
NBVAL_DIR := _build/nbval
nbtest: install
	rm -rf $(NBVAL_DIR) _build/metrics && mkdir -p $(NBVAL_DIR) _build/metrics
	$(BIN)/python -c 'import sys, jupytext; from pathlib import Path; out = Path(sys.argv[1]); \
	    [jupytext.write(jupytext.read(f), out / (Path(f).stem + ".ipynb")) for f in sys.argv[2:]]' \
	    $(NBVAL_DIR) $(NOTEBOOKS)
	PYTHONPATH=tests REASONING_LAB_METRICS_DIR=$(abspath _build/metrics) $(BIN)/python -m pytest \
	    -p nbval_cache --nbval-lax --nbval-cell-timeout=600 -o testpaths= -p no:cacheprovider \
	    -n $(JOBS) --dist loadfile --no-loadscope-reorder --rootdir=$(NBVAL_DIR) $(NBVAL_DIR)
	$(BIN)/python -m pytest -p no:cacheprovider tests/expectations.py --metrics-dir _build/metrics \
	    --nbcache-dir _build/.jupyter_cache

test: install assets
	$(BIN)/python -m pytest -n $(UNIT_JOBS) --dist load --maxschedchunk 1 tests
	$(MAKE) --no-print-directory nbtest
	$(build_from_cache)
	@echo "Book: $(abspath _build/html/index.html)"
	$(MAKE) --no-print-directory browser

# Every page of the built book in headless Chromium: math typeset, figures loaded, sliders move, no
# errors and nothing fetched from outside the book; screenshots in _build/screenshots/. Skipped (one
# line) when no Chromium is installed.
browser: install
	$(BIN)/python tools/browser_check.py --html _build/html --screenshots _build/screenshots

# JupyterLab for reading and running the chapters with a live kernel: jupytext (jupytext.toml) opens the
# MyST sources as notebooks (tools/lab-settings/overrides.json: a double click opens a .md as a notebook,
# and every cell is rendered, so that widget outputs far down a chapter are live), jupyterlab-myst renders
# the prose (its {eval} expressions show the numbers the cells glued), and saving leaves the .md as it
# was (jupytext.toml). The kernels are interactive: no REASONING_LAB_QUIET (progress bars show) and no
# REASONING_LAB_THREADS (each chapter's own `threads` parameter applies), whatever the book build sets.
LAB_ARGS ?=
lab: install
	env -u REASONING_LAB_QUIET -u REASONING_LAB_THREADS $(BIN)/jupyter lab --notebook-dir=. \
	    --LabApp.default_url=/lab/tree/notebooks --LabApp.app_settings_dir=tools/lab-settings \
	    $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The interactive path in headless Chromium: `make lab` (a real server with a live kernel) runs a chapter
# whole: its prose must render (no MyST role left raw, every {eval} number shown; the rendered text is
# written to _build/lab/<chapter>.txt), its training shows a progress bar, a widget slider is dragged and
# the figure must redraw, and saving it leaves the .md unchanged; screenshot in _build/lab/. Skipped
# without Chromium.
LAB_CHAPTER ?= notebooks/bilinear-dynamics.md
lab-check: install
	$(BIN)/python tools/lab_check.py --notebook $(LAB_CHAPTER)

# A regular install as a reader makes it (pip install -c constraints.txt of the wheel into an isolated
# virtual environment), used from outside the checkout: `reasoning-lab list` finds every experiment and
# every chapter runs at reduced sizes.
wheel-check: install
	$(BIN)/python tools/wheel_check.py

# A single run takes its threads from its parameters (`-p threads=N`; 0 is PyTorch's default), not from
# the one-thread setting above, which would win over them (see lab.start).
run: REASONING_LAB_THREADS :=
run: install
	$(BIN)/reasoning-lab run $(EXP) $(ARGS)

bench: install
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e ".[bench]"
	$(BIN)/python bench/run_all.py

# The GPU check needs only torch, NumPy and lib/ (no install step): it uses this virtual environment when
# there is one and python3 otherwise, e.g. on a GPU machine with PyTorch preinstalled.
GPU_CHECK_OUT ?= runs/gpu-check
GPU_CHECK_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	PYTHONPATH=lib $(GPU_CHECK_PYTHON) bench/gpu_check.py --out $(GPU_CHECK_OUT)

test-slow: install
	RUN_SLOW=1 $(BIN)/python -m pytest -m slow tests

clean:
	rm -rf _build .pytest_cache build dist
	find . -name __pycache__ -prune -exec rm -rf {} +
