# cocdrive: the two commands a fresh clone needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of this version lies on the CI machines' disk; installing it first means the
# project's `torch>=2.5` range is already satisfied and pip never pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: venv install dev demo test test-slow lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: install
	$(VENV)/bin/cocdrive demo --out $(DEMO_OUT)

test: dev
	$(VENV)/bin/ruff check planner sim_eval tests
	$(VENV)/bin/ruff format --check planner sim_eval tests
	$(PY) -m pytest -q -m "not slow and not gpu"

test-slow: dev
	$(PY) -m pytest -q -m "slow or gpu"

lint: dev
	$(VENV)/bin/ruff check planner sim_eval tests

format: dev
	$(VENV)/bin/ruff format planner sim_eval tests
	$(VENV)/bin/ruff check --fix planner sim_eval tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs
