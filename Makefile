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

# Three pytest processes side by side: the system tests (processes end to end), the other
# tests that mostly wait on subprocesses, brokers and a browser (browser/, the simulator's
# servers, and the integration tests that kill, restart or back up processes), and the
# rest, which mostly compute. On a 2-core machine two groups took `make test` from 17.3 to
# 11.1 minutes (measured); a third keeps the computing group the longest when the suite
# grows. The waiting groups' output is printed after the rest's; any failing fails the
# target.
SYSTEM_TESTS := tests/system
WAITING_TESTS := tests/browser tests/integration/edge tests/integration/simulator \
	$(addprefix tests/integration/server/,test_mqtt_ingest.py test_mqtt_ingest_faults.py \
	test_mqtt_ingest_burst.py test_ledger_crash.py test_postgres_crash.py test_store_outages.py \
	test_history_backup.py test_disk_cli.py test_postgres_server_process.py)
unit:
	@system=$$(mktemp); waiting=$$(mktemp); \
	$(BIN)/pytest $(SYSTEM_TESTS) >$$system 2>&1 & system_pid=$$!; \
	$(BIN)/pytest $(WAITING_TESTS) >$$waiting 2>&1 & waiting_pid=$$!; \
	$(BIN)/pytest $(addprefix --ignore=,$(SYSTEM_TESTS) $(WAITING_TESTS)); rest=$$?; \
	wait $$system_pid; system_rc=$$?; wait $$waiting_pid; waiting_rc=$$?; \
	echo "---- $(SYSTEM_TESTS) ----"; cat $$system; \
	echo "---- $(WAITING_TESTS) ----"; cat $$waiting; rm -f $$system $$waiting; \
	test $$rest -eq 0 && test $$system_rc -eq 0 && test $$waiting_rc -eq 0

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
