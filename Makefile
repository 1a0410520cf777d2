PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration bench openapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check app tests bench scripts
	$(BIN)/ruff format --check app tests bench scripts
	$(BIN)/mypy app

# Two workers: most of the suite waits on servers and timeouts, not CPU. loadfile keeps each
# module (and its module-scoped server) on one worker.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python bench/broker_bench.py

openapi: $(STAMP)
	$(BIN)/python -m scripts.export_openapi openapi/openapi.json

clean:
	rm -rf $(VENV) data
