PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The JavaScript clients of tests/clients, from its lockfile; left out where npm is absent
# (tests/e2e/test_clients.py is then skipped for want of node, or says what to run).
CLIENTS := tests/clients
CLIENTS_STAMP := $(if $(shell command -v npm),$(CLIENTS)/node_modules/.installed)

.PHONY: serve test lint schema inputs bench fuzz load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

$(CLIENTS)/node_modules/.installed: $(CLIENTS)/package-lock.json
	npm ci --prefix $(CLIENTS) --no-audit --no-fund --loglevel=error
	touch $@

serve: $(STAMP)
	$(BIN)/imaging-api serve

test: $(STAMP) $(CLIENTS_STAMP)
	$(BIN)/ruff check api store tests bench scripts
	$(BIN)/ruff format --check api store tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

schema: $(STAMP)
	$(BIN)/imaging-api schema > schema.graphql

# api/graphql/inputs.py, generated from the output types (a test fails when it drifts)
inputs: $(STAMP)
	$(BIN)/python scripts/generate_inputs.py

bench: $(STAMP)
	$(BIN)/python -m bench

# schemathesis with 1,000 examples per operation (make test runs a small budget)
fuzz: $(STAMP)
	IMAGING_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest tests/api/graphql/test_fuzz.py -q

# 50 viewer sessions for 60 s, then the same with a 10 s store outage in the middle
load: $(STAMP)
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(CLIENTS)/node_modules
