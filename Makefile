# shopfloor — two commands matter: `make demo` and `make test`. Both create .venv if missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VENDOR := src/shopfloor/server/web/static/vendor
DEMO_ARGS ?=

.PHONY: demo test lint typecheck imports unit install install-dev web-assets system-deps bench clean lock audit sbom

demo: install web-assets
	$(BIN)/shopfloor demo $(DEMO_ARGS)

test: install-dev web-assets system-deps lint typecheck imports unit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Runtime dependencies only, from the hash-pinned lock.
$(VENV)/.runtime-installed: requirements/runtime.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/runtime.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: requirements/dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.runtime-installed

install: $(VENV)/.runtime-installed
install-dev: $(VENV)/.dev-installed

# Chart and UI libraries come from the npm registry at build time and are served by the
# server itself (no CDN): node_modules and the copied files are never committed.
web-assets: $(VENDOR)/.stamp
$(VENDOR)/.stamp: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Debian's 'npm' package (apt-get install npm)"; exit 2; }
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp web/node_modules/echarts/dist/echarts.min.js $(VENDOR)/
	cp web/node_modules/rapidoc/dist/rapidoc-min.js $(VENDOR)/
	touch $@

system-deps:
	@bash scripts/system-deps.sh

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

imports:
	$(BIN)/lint-imports

# Two pytest processes side by side: the tests that mostly wait on subprocesses, brokers and
# a browser (system/, browser/, and the integration tests that kill and restart processes)
# beside the rest, which mostly compute. On a 2-core machine this took `make test` from
# 17.3 to 11.1 minutes (measured); the groups are rebalanced when one ends minutes before
# the other. The waiting group's output is printed after the other's; either failing fails
# the target.
WAITING_TESTS := tests/system tests/browser tests/integration/edge \
	tests/integration/server/test_mqtt_ingest.py tests/integration/server/test_mqtt_ingest_faults.py \
	tests/integration/server/test_ledger_crash.py tests/integration/server/test_postgres_crash.py \
	tests/integration/server/test_store_outages.py
unit:
	@log=$$(mktemp); \
	$(BIN)/pytest $(WAITING_TESTS) >$$log 2>&1 & waiting=$$!; \
	$(BIN)/pytest $(addprefix --ignore=,$(WAITING_TESTS)); rest=$$?; \
	wait $$waiting; waited=$$?; \
	echo "---- $(WAITING_TESTS) ----"; cat $$log; rm -f $$log; \
	test $$rest -eq 0 && test $$waited -eq 0

bench: install-dev
	for script in bench/ingest.py bench/ingest_ack.py bench/historian.py bench/queries.py bench/alarms.py bench/retention.py bench/simulator.py bench/connectors.py bench/outbox.py bench/edge.py bench/scale.py; do $(BIN)/python $$script || exit 1; done

# Re-pin dependencies after changing pyproject.toml (needs the registry).
lock: | $(BIN)/python
	$(BIN)/pip install --quiet uv
	cd requirements && ../$(BIN)/uv pip compile ../pyproject.toml --python-version 3.11 --generate-hashes -q -o runtime.lock
	cd requirements && ../$(BIN)/uv pip compile ../pyproject.toml --extra dev --python-version 3.11 --generate-hashes -q -o dev.lock
	cd requirements && ../$(BIN)/uv pip compile build.in --python-version 3.11 --generate-hashes -q -o build.lock

# Known vulnerabilities in every pinned dependency (both locks, hash-checked, not resolved
# again) and in the web packages. Needs PyPI's JSON API and the npm registry's advisory
# service, so it is not part of `make test`; run it in CI on a schedule and before a release.
audit: install-dev
	$(BIN)/pip-audit --strict --require-hashes --disable-pip --progress-spinner off \
		-r requirements/runtime.lock -r requirements/dev.lock
	cd web && npm audit --package-lock-only --omit=dev

# A CycloneDX 1.6 SBOM of what a build pins: the runtime lock (versions, hashes, graph) and
# the web packages of web/package-lock.json. No network; same locks, same file (set
# SOURCE_DATE_EPOCH for the timestamp too).
SBOM ?= build/sbom.cdx.json
sbom: | $(BIN)/python
	$(BIN)/python scripts/sbom.py --out $(SBOM)

clean:
	rm -rf $(VENV) web/node_modules $(VENDOR) .mypy_cache .ruff_cache .pytest_cache
