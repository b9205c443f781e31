# The course in two commands, on a Linux or macOS machine with Python 3.10+:
#   make lab    set up .venv if needed, then open the notebooks in JupyterLab
#   make test   set up .venv if needed, then run the unit tests and every notebook (smoke preset)
# Setting up installs torch and torchvision first (PIP_TORCH_ARGS), then this package in editable mode.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# For example, the CPU-only wheels on Linux (about 200 MB instead of several GB):
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PIP_TORCH_ARGS ?= torch torchvision $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
# Extra JupyterLab arguments, e.g. make lab LAB_ARGS="--no-browser --port 8899". Root (as in many
# containers) needs --allow-root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-x -k info_nce"
PYTEST_ARGS ?=
# Extra bench/suite.py arguments, e.g. make bench BENCH_ARGS="--pack ../shared/data/cifar10-jpeg.npz"
BENCH_ARGS ?=
# A notebook cell running longer than this fails with a traceback instead of hanging the run.
NBVAL_CELL_TIMEOUT ?= 900
# Notebooks 00-04 and 05-09 share no training runs (02-04 reuse 01's and 03's, 09 reuses 08's): on two or more cores
# the two groups run side by side, each kernel with half the threads, as a small CNN uses a second thread poorly.
# NOTEBOOK_WORKERS=1 runs them one by one. A notebook that reuses another's runs must be in that one's group.
NOTEBOOK_WORKERS ?= $(shell [ "$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" -ge 2 ] && echo 2 || echo 1)
NOTEBOOK_THREADS ?= $(shell n=$${OMP_NUM_THREADS:-$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}; \
	t=$$(( n / $(NOTEBOOK_WORKERS) )); echo $$(( t > 0 ? t : 1 )))
NBVAL = env -u MPLBACKEND CLCOURSE_PRESET=smoke OMP_NUM_THREADS=$(NOTEBOOK_THREADS) MKL_NUM_THREADS=$(NOTEBOOK_THREADS) \
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NBVAL_CELL_TIMEOUT) $(PYTEST_ARGS)
# When set (CI does), each pytest run writes a JUnit XML report into this folder.
JUNIT_DIR ?=
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
NOTEBOOKS_FIRST := $(filter $(foreach n,00 01 02 03 04,notebooks/$(n)_%),$(NOTEBOOKS))
NOTEBOOKS_SECOND := $(filter-out $(NOTEBOOKS_FIRST),$(NOTEBOOKS))

# umap-learn compiles its numba functions on first use (~20-60 s on 2 cores); cache them once, in the repo.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
# The stamp records that .venv matches the current pyproject.toml.
STAMP := $(VENV)/.clcourse-installed

junit = $(if $(JUNIT_DIR),--junitxml=$(JUNIT_DIR)/$(1).xml)

.PHONY: mutate venv lab test test-unit test-heavy test-notebooks data clean-notebooks check-notebooks student bench clean-venv help \
	nbgrader test-nbgrader test-browser diagrams

help:
	@echo "make lab              set up .venv if needed, open notebooks/ in JupyterLab"
	@echo "make test             set up .venv if needed, run unit tests and notebooks (CLCOURSE_PRESET=smoke)"
	@echo "make test-unit        only pytest tests/ (heavy checks: one representative case each)"
	@echo "make test-heavy       the full set of each heavy check (e.g. bench/accuracy.py for every method)"
	@echo "make test-notebooks   only the notebooks, under nbval"
	@echo "make data             download CIFAR-10 into the data root (data/ or \$$CLCOURSE_DATA)"
	@echo "make clean-notebooks  strip notebook outputs, keeping the NBVAL_CHECK_OUTPUT cells'"
	@echo "make student          write the notebooks without their solutions into student/"
	@echo "make diagrams         redraw the method diagrams, notebooks/figures/*.svg"
	@echo "make nbgrader         write an nbgrader course folder into classroom/ (NBGRADER_OUT=...)"
	@echo "make test-nbgrader    nbgrader autogrades notebook 01 three times (NBGRADER_NOTEBOOKS=all: every one)"
	@echo "make test-browser     the course in a real JupyterLab, driven by headless Chromium"
	@echo "make bench            measure every GPU figure of the README (bench/suite.py; BENCH_ARGS=--smoke on a CPU)"
	@echo "make mutate           mutation scores of losses, evaluate, augment, train (slow; MODULE=... for one)"
	@echo "make venv             only set up .venv"
	@echo "make clean-venv       delete .venv"

venv: $(STAMP)

# torchattacks is the test oracle of clcourse/attacks.py (tests/test_attacks.py), installed with --no-deps:
# it pins requests~=2.25.1, which jupyterlab-server (requests>=2.31) rules out, and never imports requests.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "pip>=21.3"
	$(BIN)/python -m pip install $(PIP_TORCH_ARGS)
	$(BIN)/python -m pip install -e '.[lab,test]'
	$(BIN)/python -m pip install --no-deps "torchattacks>=3.5"
	touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

# Runs both parts even when the first fails, so one run reports everything; fails if either failed.
test: $(STAMP)
	@status=0; \
	$(MAKE) --no-print-directory test-unit || status=1; \
	$(MAKE) --no-print-directory test-notebooks || status=1; \
	exit $$status

# Heavy checks run one representative case here (CI's budget); their full set is `make test-heavy`.
test-unit: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests/ -m "not heavy" --durations=10 $(call junit,unit) $(PYTEST_ARGS)

test-heavy: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests/ -m heavy --durations=10 $(call junit,heavy) $(PYTEST_ARGS)

# Notebooks run with the kernel's inline plotting backend, as students see them (and it closes figures
# after each cell), so MPLBACKEND is unset. No notebooks is reported loudly; notebooks that yield no
# test make pytest exit 5, which fails the run. tests/test_notebook_hygiene.py checks that the stored
# outputs nbval compares against are there.
test-notebooks: $(STAMP)
ifeq ($(NOTEBOOKS),)
	@echo "WARNING: no notebooks in notebooks/: notebook tests skipped"
else ifeq ($(and $(filter-out 1,$(NOTEBOOK_WORKERS)),$(NOTEBOOKS_FIRST),$(NOTEBOOKS_SECOND)),)
	$(NBVAL) $(call junit,notebooks) $(NOTEBOOKS)
else
	@mkdir -p .cache; \
	echo "notebooks 05-09 run beside 00-04; their log follows at the end (.cache/notebooks-05-09.log)"; \
	$(NBVAL) -p no:cacheprovider $(call junit,notebooks-05-09) $(NOTEBOOKS_SECOND) \
		> .cache/notebooks-05-09.log 2>&1 & second=$$!; \
	status=0; \
	$(NBVAL) $(call junit,notebooks-00-04) $(NOTEBOOKS_FIRST) || status=1; \
	wait $$second || status=1; \
	echo "=== notebooks 05-09 (.cache/notebooks-05-09.log)"; cat .cache/notebooks-05-09.log; \
	exit $$status
endif

data: $(STAMP)
	$(BIN)/python -c "from clcourse.data import load_dataset; load_dataset('cifar10'); load_dataset('cifar10', train=False)"

clean-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py strip

check-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py check

# The version handed out to students: each solution becomes `raise NotImplementedError()` (git-ignored).
student: $(STAMP)
	$(BIN)/python tools/notebooks.py student

# The method diagrams the notebooks show, drawn by tools/diagrams.py (matplotlib);
# tests/test_diagrams.py fails when the committed SVG files differ from what it draws.
diagrams: $(STAMP)
	$(BIN)/python tools/diagrams.py

# Teaching: nbgrader (the `instructor` extra), installed on top of the course's venv when first needed.
INSTRUCTOR_STAMP := $(VENV)/.clcourse-instructor
NBGRADER_OUT ?= classroom
# Notebook numbers for test-nbgrader ("01 05"), or all; CI grades notebook 01.
NBGRADER_NOTEBOOKS ?= 01

$(INSTRUCTOR_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[instructor]'
	touch $@

# An nbgrader course folder (nbgrader_config.py, source/<notebook>/): see the README, "Teaching with the course".
nbgrader: $(INSTRUCTOR_STAMP)
	$(BIN)/python tools/notebooks.py nbgrader $(NBGRADER_OUT)

# nbgrader itself generates each assignment and autogrades three submissions (tests/e2e_nbgrader.py).
test-nbgrader: $(INSTRUCTOR_STAMP)
	NBGRADER_NOTEBOOKS="$(NBGRADER_NOTEBOOKS)" $(BIN)/python -m pytest tests/e2e_nbgrader.py -rA \
		$(call junit,nbgrader) $(PYTEST_ARGS)

# The course in a real JupyterLab, driven by headless Chromium (tests/e2e_browser.py): needs Debian's chromium and
# chromium-driver (apt-get install chromium chromium-driver); screenshots of each step go to BROWSER_ARTEFACTS.
BROWSER_STAMP := $(VENV)/.clcourse-browser
BROWSER_ARTEFACTS ?= $(CURDIR)/.cache/browser

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[browser]'
	touch $@

test-browser: $(BROWSER_STAMP)
	BROWSER_ARTEFACTS="$(BROWSER_ARTEFACTS)" $(BIN)/python -m pytest tests/e2e_browser.py -rA \
		$(call junit,browser) $(PYTEST_ARGS)

# Every GPU figure the README's Performance section claims, in one process and a 12-minute budget; writes
# bench/results/<date>_<gpu>.json (then python bench/report.py puts it into README.md).
bench: $(STAMP)
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)

# Would the tests notice a wrong line? One small edit per mutant, the module's tests against each (not in CI:
# about an hour for all four modules on 2 cores). MODULE=clcourse/losses.py for one, MUTATE_ARGS="--sample 40".
MODULE ?= all
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py $(MODULE) $(MUTATE_ARGS)
