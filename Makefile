# Two entry points a new user needs: `make demo` and `make test`. Both set up .venv first, from
# requirements.lock (exact versions with hashes); `make lock` refreshes it from pyproject.toml's
# ranges.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: demo up test test-unit test-integration lint typecheck bench clean lock

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Linux x86_64, CPython 3.11 (what CI and the Dockerfile run); PyPI only, hashes included.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_34 \
		--index-url https://pypi.org/simple --no-header --quiet -o $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --upgrade -c $(LOCK) \
		--python-version 3.11 --python-platform x86_64-manylinux_2_34 \
		--index-url https://pypi.org/simple --no-header --quiet -o requirements.runtime.lock

demo: $(STAMP)
	$(BIN)/driftline demo

up: $(STAMP)
	$(BIN)/driftline up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var out .mypy_cache .pytest_cache .ruff_cache
