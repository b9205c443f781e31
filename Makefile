# The course in two commands, on a Linux or macOS machine with Python 3.10+ (Windows: docs/install.md):
#   make lab    set up .venv if needed, then open JupyterLab on the student copies (student/)
#   make test   set up .venv if needed, then run ruff, the unit tests and every notebook (smoke preset)
# Setting up installs torch and torchvision first, then this package in editable mode.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which torch wheels: tools/torch_wheels.py chooses, and says which and why. On Linux without an NVIDIA GPU it takes
# the CPU-only wheels (about 200 MB instead of several GB) when their index answers, and pip's own index otherwise.
#   make venv TORCH_WHEELS=cpu          the CPU-only wheels (TORCH_WHEELS=default: pip's index, auto: the choice)
#   make venv TORCH_INDEX_URL=URL       torch from that index
#   make venv PIP_TORCH_ARGS="torch==2.5.1 torchvision==0.20.1"    the whole torch install line
TORCH_WHEELS ?= auto
TORCH_INDEX_URL ?=
# torch_install VENV: the recipe lines that choose the wheels (into VENV/.torch-index) and install them there.
ifeq ($(origin PIP_TORCH_ARGS),undefined)
define torch_install
	TORCH_WHEELS="$(TORCH_WHEELS)" TORCH_INDEX_URL="$(TORCH_INDEX_URL)" $(PYTHON) tools/torch_wheels.py > $(1)/.torch-index
	$(1)/bin/python -m pip install $(2) torch torchvision $$(cat $(1)/.torch-index)
endef
else
define torch_install
	@echo "torch: PIP_TORCH_ARGS=$(PIP_TORCH_ARGS)"
	$(1)/bin/python -m pip install $(2) $(PIP_TORCH_ARGS)
endef
endif
# Extra JupyterLab arguments, e.g. make lab LAB_ARGS="--no-browser --port 8899". Root (as in many
# containers) needs --allow-root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-x -k info_nce"
PYTEST_ARGS ?=
# Extra bench/suite.py arguments, e.g. make bench BENCH_ARGS="--pack path/to/cifar10-jpeg.npz" (bench/README.md)
BENCH_ARGS ?=
# A notebook cell running longer than this fails with a traceback instead of hanging the run.
NBVAL_CELL_TIMEOUT ?= 900
# Notebooks 00-04 and 05-10 share no training runs (02-04 reuse 01's and 03's, 09 reuses 08's): on two or more cores
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

.PHONY: mutate venv lab lint test test-oldest test-unit test-heavy test-notebooks data clean-notebooks check-notebooks student bench clean-venv help \
	nbgrader test-nbgrader test-browser diagrams site test-site

help:
	@echo "make lab              set up .venv if needed, open JupyterLab on student/ (LAB_FOLDER=notebooks: solutions)"
	@echo "make test             set up .venv if needed, run lint, unit tests and notebooks (CLCOURSE_PRESET=smoke)"
	@echo "make lint             only ruff check (the whole repository; rules in pyproject.toml)"
	@echo "make test-unit        only pytest tests/ (heavy checks: one representative case each)"
	@echo "make test-heavy       the full set of each heavy check (e.g. bench/accuracy.py for every method)"
	@echo "make test-notebooks   only the notebooks, under nbval"
	@echo "make data             download CIFAR-10 into the data root (data/ or \$$CLCOURSE_DATA)"
	@echo "make clean-notebooks  strip notebook outputs, keeping the NBVAL_CHECK_OUTPUT cells'"
	@echo "make student          write the notebooks without their solutions into student/ (committed)"
	@echo "make diagrams         redraw the method diagrams, notebooks/figures/*.svg"
	@echo "make test-oldest      the unit tests at every dependency's lower bound, in .venv-oldest (OLDEST_PYTHON)"
	@echo "make nbgrader         write an nbgrader course folder into classroom/ (NBGRADER_OUT=...)"
	@echo "make test-nbgrader    nbgrader autogrades notebook 01 three times, docs/teaching.md's commands run on it"
	@echo "make test-browser     the course in a real JupyterLab, driven by headless Chromium"
	@echo "make site             the course site in .cache/site/ (PRESET=colab: from colab-preset executions)"
	@echo "make test-site        two pages of the built site in headless Chromium: an equation, a figure, the sidebar"
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
	$(call torch_install,$(VENV))
	$(BIN)/python -m pip install -e '.[lab,test]'
	$(BIN)/python -m pip install --no-deps "torchattacks>=3.5"
	touch $@

# The learner's path: JupyterLab at the repository's root (README.md and docs/ within reach), opened on the student
# copies. LAB_FOLDER=notebooks opens the solutions.
LAB_FOLDER ?= student
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ARGS) --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/$(LAB_FOLDER)

# Runs all three parts even when one fails, so one run reports everything; fails if any failed.
test: $(STAMP)
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory test-unit || status=1; \
	$(MAKE) --no-print-directory test-notebooks || status=1; \
	exit $$status

# The code's style: pyproject.toml's [tool.ruff] (lines of at most 100 characters, import order, likely bugs).
lint: $(STAMP)
	$(BIN)/ruff check .

# Heavy checks run one representative case here (CI's budget); their full set is `make test-heavy`.
test-unit: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests/ -m "not heavy" --durations=10 $(call junit,unit) $(PYTEST_ARGS)

test-heavy: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests/ -m heavy --durations=10 $(call junit,heavy) $(PYTEST_ARGS)

# Notebooks run with the kernel's inline plotting backend, as students see them (and it closes figures
# after each cell), so MPLBACKEND is unset. No notebooks is reported loudly; notebooks that yield no
# test make pytest exit 5, which fails the run. tests/tools/test_notebooks.py checks that the stored
# outputs nbval compares against are there.
test-notebooks: $(STAMP)
ifeq ($(NOTEBOOKS),)
	@echo "WARNING: no notebooks in notebooks/: notebook tests skipped"
else ifeq ($(and $(filter-out 1,$(NOTEBOOK_WORKERS)),$(NOTEBOOKS_FIRST),$(NOTEBOOKS_SECOND)),)
	$(NBVAL) $(call junit,notebooks) $(NOTEBOOKS)
else
	@mkdir -p .cache; \
	echo "notebooks 05-10 run beside 00-04; their log follows at the end (.cache/notebooks-05-09.log)"; \
	$(NBVAL) -p no:cacheprovider $(call junit,notebooks-05-09) $(NOTEBOOKS_SECOND) \
		> .cache/notebooks-05-09.log 2>&1 & second=$$!; \
	status=0; \
	$(NBVAL) $(call junit,notebooks-00-04) $(NOTEBOOKS_FIRST) || status=1; \
	wait $$second || status=1; \
	echo "=== notebooks 05-10 (.cache/notebooks-05-09.log)"; cat .cache/notebooks-05-09.log; \
	exit $$status
endif

data: $(STAMP)
	$(BIN)/python -c "from clcourse.data import load_dataset; load_dataset('cifar10'); load_dataset('cifar10', train=False)"

clean-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py strip

check-notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py check

# The versions handed out to students (student/, committed): each solution becomes `raise NotImplementedError()`.
# A copy changed since it was written stops the run; STUDENT_ARGS=--force overwrites it.
STUDENT_ARGS ?=
student: $(STAMP)
	$(BIN)/python tools/notebooks.py student $(STUDENT_ARGS)

# The lower bound of every dependency (tools/lower_bounds.py) in a venv of its own, with the oldest Python the course
# supports: the unit tests that need no notebook tooling (nbformat, nbval, nbgrader). Run before each release.
OLDEST_PYTHON ?= python3.10
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.clcourse-installed
OLDEST_TESTS ?= $(shell grep -rL -E 'nbformat|nbval|nbclient|nbgrader' --include='test_*.py' tests)

$(OLDEST_STAMP): pyproject.toml tools/lower_bounds.py
	test -x $(OLDEST_VENV)/bin/python || $(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install "pip>=21.3"
	$(PYTHON) tools/lower_bounds.py --with pytest > $(OLDEST_VENV)/lower-bounds.txt
	$(call torch_install,$(OLDEST_VENV),-c $(OLDEST_VENV)/lower-bounds.txt)
	$(OLDEST_VENV)/bin/python -m pip install -c $(OLDEST_VENV)/lower-bounds.txt -e . pytest
	touch $@

# Without CLCOURSE_DATA: the tests on the real CIFAR-10 are skipped, as a copy that a newer NumPy wrote (NumPy 2's
# pickles) cannot be read by the oldest one; the other tests make their own data. With the UMAP test (a minute of
# numba compilation), as umap-learn's lower bound is one of those tested.
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pip freeze | grep -i -E '^(torch|torchvision|numpy|matplotlib|ipywidgets|tqdm|umap-learn|scikit-learn|numba|pytest)=='
	env -u CLCOURSE_DATA CLCOURSE_TEST_UMAP=1 MPLBACKEND=Agg $(OLDEST_VENV)/bin/python -m pytest $(OLDEST_TESTS) -m "not heavy" \
		-p no:cacheprovider \
		--durations=10 $(call junit,oldest) $(PYTEST_ARGS)

# The method diagrams the notebooks show, drawn by tools/diagrams.py (matplotlib);
# tests/tools/test_diagrams.py fails when the committed SVG files differ from what it draws.
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

# An nbgrader course folder (nbgrader_config.py, source/<notebook>/): docs/teaching.md gives every command after it.
nbgrader: $(INSTRUCTOR_STAMP)
	$(BIN)/python tools/notebooks.py nbgrader $(NBGRADER_OUT)

# nbgrader itself generates each assignment and autogrades three submissions (tests/e2e_nbgrader.py), and
# docs/teaching.md's commands run as written on notebook 01 in a copy of the checkout (tests/e2e_teaching.py).
test-nbgrader: $(INSTRUCTOR_STAMP)
	NBGRADER_NOTEBOOKS="$(NBGRADER_NOTEBOOKS)" $(BIN)/python -m pytest tests/e2e_nbgrader.py tests/e2e_teaching.py -rA \
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

# The course site (tools/course_site.py; Sphinx, MyST-NB and the book theme: the `site` extra, installed on top of the
# course's venv when first needed): README.md as the landing page, every notebook with its outputs, the package map
# and the guides, in .cache/site/, every internal link and anchor checked. The notebooks' outputs come from their
# executions in .cache/executed/PRESET/, which make test-notebooks saves; the missing or stale ones run first.
# PRESET=colab builds from colab-preset executions (running the missing ones needs a GPU);
# SITE_ARGS=--no-execute fails, naming them, instead of running notebooks (CI).
SITE_STAMP := $(VENV)/.clcourse-site
PRESET ?= smoke
SITE_ARGS ?=

$(SITE_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[site]'
	touch $@

site: $(SITE_STAMP)
	env -u MPLBACKEND $(BIN)/python tools/course_site.py build --preset $(PRESET) $(SITE_ARGS)

# Two pages of the site built by make site, in headless Chromium (tests/e2e_site.py, the browser test's set-up):
# a rendered equation, a figure, the sidebar with every notebook, no widget left as a box.
test-site: $(BROWSER_STAMP)
	BROWSER_ARTEFACTS="$(BROWSER_ARTEFACTS)" $(BIN)/python -m pytest tests/e2e_site.py -rA \
		$(call junit,site) $(PYTEST_ARGS)

# Every GPU figure the course claims (bench/README.md's Performance section), in one process and a 12-minute
# budget; writes bench/results/<date>_<gpu>.json (then python bench/report.py puts it into bench/README.md).
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
