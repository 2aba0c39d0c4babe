# neptune-exporter: developer entry points. Every target creates the virtualenv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/neptune-exporter
PYTEST_ARGS ?= -n 2 --dist loadfile --timeout 900 --durations=25
SERVE_HOME ?= .prefect-serve
SERVE_PORT ?= 4200
DEMO_ARGS ?=

.PHONY: dev lint test unit demo serve bench clean

# The editable install creates the console script: its presence marks a ready environment.
$(CLI): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[test,goodseed,zenml,comet]'
	touch $(CLI)

dev: $(CLI)

# The static checks, configured in pyproject.toml: import contracts ([tool.importlinter]), ruff lint and format
# ([tool.ruff]), mypy on the library ([tool.mypy]).
lint: $(CLI)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

# The whole suite exactly as CI runs it: the static checks first, then pytest (it exits 5 when no test ran, which
# fails the target).
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(CLI)
	$(PY) -m pytest tests/unit -q

# `make demo DEMO_ARGS=--fresh` starts from empty demo folders; a plain rerun reuses them (unchanged runs skipped).
demo: $(CLI)
	$(CLI) demo $(DEMO_ARGS)

serve: $(CLI)
	$(CLI) serve --home $(SERVE_HOME) --port $(SERVE_PORT)

# Benchmarks (bench/README.md); `make bench BENCH_ARGS=--quick` for the under-five-minutes sizes.
bench: $(CLI)
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf exports demo .demo $(SERVE_HOME) .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
