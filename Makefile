# The two commands of the README:
#   make repro   set up .venv (first time only) and regenerate every table and figure (dvc repro)
#   make test    set up .venv (first time only), bring the pipeline outputs up to date, run all tests
#
# Needs only Python 3.11 with pip and venv. Everything goes into ./.venv; nothing is installed globally.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := deconflict

# Stage commands call `python`, `dvc` and `papermill`: make sure they are the environment's.
export PATH := $(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
# Deterministic runs, no analytics. (No MPLBACKEND here: notebooks keep their inline figures.)
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0

.PHONY: repro test verify lint format install kernel lab clean-venv

# The pipeline: the stale training runs first, WORKERS of them side by side (each smoke stage runs on one
# thread; pipelines/launch.py records them in dvc.lock), then `dvc repro` for everything else (it trains
# nothing twice: a recorded run is up to date). Plain `dvc repro` gives the same bits, one stage at a time.
WORKERS ?= 2
PIPELINE = python pipelines/plan_runs.py --check && python pipelines/launch.py --workers $(WORKERS) --wait && dvc repro

# make verify's tolerance (auto: 0 — bit for bit — on a CPU of the vendor that made the committed numbers, papers/reproduced_on.json; the measured cross-vendor tolerance on another)
RTOL ?= auto
ATOL ?= 0

repro: $(STAMP)
	$(PIPELINE)

# Style first (ruff lint + format check, seconds), then the pipeline, then every test.
# pytest exits with 5 when it collects nothing: that is a broken setup, not a pass.
test: $(STAMP)
	ruff check .
	ruff format --check .
	$(PIPELINE)
	python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests: the test setup is broken"; exit 1; fi; \
	exit $$status

# For reviewers: regenerate everything, then compare every table's numbers with the committed ones.
verify: $(STAMP)
	$(PIPELINE)
	python pipelines/verify.py --rtol $(RTOL) --atol $(ATOL)

install: $(STAMP)

# ruff: `make lint` checks, `make format` rewrites (the same rules make test enforces)
lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff check --fix .
	ruff format .

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "deconflict needs Python 3.11, found " + sys.version.split()[0]' \
		|| { echo "error: $(PYTHON) is not Python 3.11; run 'make PYTHON=/path/to/python3.11 ...'"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (deconflict)"
	touch $(STAMP)

# Open the notebooks with the project's kernel.
lab: $(STAMP)
	jupyter lab papers

clean-venv:
	rm -rf $(VENV)
