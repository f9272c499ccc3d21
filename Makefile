# The jobs people do, one command each. Every target sets up what it needs.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps run test fuzz coverage lint format bench soak docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=python3.X (>= 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -q -e '.[dev,bench]'
	$(BIN)/uv pip install --python $(BIN)/python -q -e plugins/eventrun-mqtt
	@touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

## run: the quickstart app (HTTP + cron + file-watch + embedded SQLite store), no broker needed
run: setup
	cd examples/quickstart && ../../$(BIN)/eventrun run -c eventrun.yaml

## test: the whole suite against real servers started on free loopback ports
test: setup system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## fuzz: explore the property tests with random seeds and FUZZ_SCALE times their examples,
## round after round for FUZZ_MINUTES; `make test` (and CI, with CI set) runs them derandomized
FUZZ_MINUTES ?= 10
FUZZ_SCALE ?= 10
fuzz: setup
	bash scripts/fuzz.sh $(FUZZ_MINUTES) $(FUZZ_SCALE)

## coverage: the whole suite under coverage.py, subprocesses (daemons, workers) included
coverage: setup system-deps
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

lint: setup
	$(BIN)/ruff check eventrun tests bench examples
	$(BIN)/ruff format --check eventrun tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix eventrun tests bench examples
	$(BIN)/ruff format eventrun tests bench examples

bench: setup
	@bash scripts/system-deps.sh bench
	$(BIN)/python -m bench

soak: setup
	$(BIN)/python -m bench.soak

docs: setup
	$(BIN)/python -m eventrun.config._docgen > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
