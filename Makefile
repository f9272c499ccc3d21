# The jobs people do, one command each. Every target sets up what it needs.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Plugin distributions (plugins/NAME/pyproject.toml), installed editable with their
# `test` and `bench` extras; their packages (plugins/NAME/eventrun_*) are linted too.
PLUGINS     := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
PLUGIN_PKGS := $(wildcard $(addsuffix /eventrun_*,$(PLUGINS)))

.PHONY: setup system-deps node-ric container-deps run test deploy-test chaos fuzz coverage lint format bench soak docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=python3.X (>= 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -q -e '.[dev,bench]' \
		$(foreach p,$(PLUGINS),-e '$(p)[test,bench]')
	@touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

## node-ric: the official Node.js runtime interface client for the Runtime API tests (.cache/)
node-ric: setup system-deps
	@bash scripts/node-ric.sh >/dev/null

## run: the quickstart app (HTTP + cron + file-watch + embedded SQLite store), no broker needed
run: setup
	cd examples/quickstart && ../../$(BIN)/eventrun run -c eventrun.yaml

## test: the whole suite against real servers started on free loopback ports
test: setup system-deps node-ric
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## chaos: the fault suite with its long variants (60 s network partitions...); CHAOS=tests/chaos/x.py runs a part, keeping the table's other rows
CHAOS ?= tests/chaos
chaos: setup system-deps
	rm -f .chaos-results.jsonl
	EVENTRUN_RELIABILITY_LOG=$(CURDIR)/.chaos-results.jsonl $(BIN)/python -m pytest $(CHAOS) -m "" $(PYTEST_ARGS)
	$(BIN)/python scripts/reliability_table.py --merge docs/reliability.md .chaos-results.jsonl > .reliability.md
	mv .reliability.md docs/reliability.md

## container-deps: podman, runc, debootstrap, podman-compose, prometheus; the podman config
## for this machine (runc, cgroupfs); the local base images (Debian+Python, Redis, Kafka, SQS)
container-deps: setup
	PYTHON=$(BIN)/python bash scripts/container-deps.sh

## deploy-test: the image and the Compose stack built and run for real with podman (root,
## about 5 minutes; not part of `make test`): run before a release. See deploy/README.md.
deploy-test: setup container-deps
	$(BIN)/python -m pytest -p no:cacheprovider -m containers tests/deploy $(PYTEST_ARGS)

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
	$(BIN)/ruff check eventrun tests bench examples plugins
	$(BIN)/ruff format --check eventrun tests bench examples plugins
	$(BIN)/mypy
	$(if $(PLUGIN_PKGS),$(BIN)/mypy $(PLUGIN_PKGS))
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix eventrun tests bench examples plugins
	$(BIN)/ruff format eventrun tests bench examples plugins

bench: setup
	@bash scripts/system-deps.sh bench
	@bash scripts/node-ric.sh >/dev/null
	$(BIN)/python -m bench

## `make soak MINUTES=60`: tracemalloc snapshots in the daemon every SOAK_TRACEMALLOC s
MINUTES ?= 30
SOAK_TRACEMALLOC ?= 600
soak: setup
	$(BIN)/python -m bench.soak --minutes $(MINUTES) --tracemalloc $(SOAK_TRACEMALLOC)

docs: setup
	$(BIN)/python -m eventrun.config._docgen > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
