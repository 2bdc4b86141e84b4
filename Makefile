# EventRelay: `make run` to start everything, `make test` to run the whole suite.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= $(or $(ER_HTTP_PORT),9000)
GRPC_PORT ?= $(or $(ER_GRPC_PORT),50051)
# The browser tests drive Debian's Chromium through Playwright (which never downloads a browser).
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-fast test-fresh-machine lint typecheck imports format bench services env db install install-dev protos clean browser \
	screenshots

PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
# The packages mypy checks (pyproject.toml [tool.mypy]); those that do not exist yet are left out.
TYPED_PACKAGES := $(wildcard eventrelay events topics webhooks consumers console ws_api)

# `make run` needs only what the processes import (requirements.txt); tests and tooling add requirements-dev.txt.
# Each stamp is newer than its requirements file once installed, so a second run installs nothing.
install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime requirements-dev.txt
	$(PIP_INSTALL) -r requirements-dev.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

# PostgreSQL and Redis: started when they are not answering, installed with apt first when they are absent and we
# are root (tools/ensure_services.sh says what to install otherwise).
services:
	@bash tools/ensure_services.sh

# A development .env with generated secrets (never committed; see .gitignore).
env:
	@touch .env
	@grep -q '^ER_JWT_SECRET=' .env || { echo "ER_JWT_SECRET=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" >> .env; \
	  echo "generated a development ER_JWT_SECRET in .env"; }
	@grep -q '^DJANGO_SECRET_KEY=' .env || echo "DJANGO_SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" >> .env

db: install services env
	$(PY) manage.py ensure_database
	$(PY) manage.py migrate --no-input

run: db
	@$(PY) manage.py ensure_admin
	@echo
	@echo "EventRelay is starting:"
	@echo "  admin console    http://127.0.0.1:$(PORT)/admin/"
	@echo "  live viewer      http://127.0.0.1:$(PORT)/"
	@echo "  REST API docs    http://127.0.0.1:$(PORT)/api/v1/docs   (OpenAPI: http://127.0.0.1:$(PORT)/api/v1/schema)"
	@echo "  gRPC             127.0.0.1:$(GRPC_PORT)   (server reflection on; the protos are in protos/eventrelay/v1/)"
	@echo "  metrics          http://127.0.0.1:$(PORT)/metrics, gRPC :$(or $(ER_GRPC_METRICS_PORT),9101), worker :$(or $(ER_WORKER_METRICS_PORT),9102), beat :$(or $(ER_BEAT_METRICS_PORT),9103)"
	@echo "  health           http://127.0.0.1:$(PORT)/healthz   readiness http://127.0.0.1:$(PORT)/readyz"
	@echo "  a token          $(PY) manage.py mint_token --topics users:123 --ttl 3600   (add --admin for an admin token)"
	@echo "  local webhooks   destinations on 127.0.0.1 or a private network are refused; in development start with"
	@echo "                   ER_WEBHOOK_ALLOW_PRIVATE=1 make run   (or put ER_WEBHOOK_ALLOW_PRIVATE=1 in .env)"
	@echo
	ER_HTTP_PORT=$(PORT) ER_GRPC_PORT=$(GRPC_PORT) $(VENV)/bin/honcho start

# Chromium for the browser tests: installed with apt when it is missing and we are root.
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] || { echo "the browser tests need $(CHROMIUM): apt-get install chromium (as root)"; exit 1; }; \
	  echo "installing Chromium"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Two pytest-xdist workers (TEST_WORKERS=0: one process), a test file per worker at a time so the processes a file's
# fixtures start serve all its tests. Each worker has its own database, Celery queue, Redis prefix and log directory.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

test: install-dev services env browser
	$(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "models changed without a migration: run makemigrations"; exit 1; }
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The tests that start no process and no browser (tests/conftest.py marks the others e2e): minutes, not the suite's.
test-fast: install-dev services env
	$(PY) -m pytest $(XDIST) -m "not e2e" $(PYTEST_ARGS)

# `make run` on a fresh Debian (a debootstrap chroot in a network namespace of its own) without PostgreSQL or
# Redis: they must be installed with apt and started, and the service must come up ready. Root only; minutes.
test-fresh-machine:
	bash tools/fresh_machine.sh

# Refresh the committed docs/screenshots/*.png the README shows: the browser tests that take them, told to write
# there (a plain test run writes them to the ignored .test-logs/<worker>/screenshots/docs/).
screenshots: install-dev services env browser
	REFRESH_SCREENSHOTS=1 $(PY) -m pytest $$(grep -l '^from tests.browser import .*screenshot' tests/test_*.py) $(PYTEST_ARGS)

# What CI checks before the tests (.ci/run): ruff, the formatter, mypy and the layer rule.
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck imports

# mypy with django-stubs on the kernel and the domain; the plugin imports the settings, hence env.
typecheck: install-dev env
	$(VENV)/bin/mypy $(TYPED_PACKAGES)

# The layer rule (docs/architecture.md): tools/import_graph.py prints the graph and exits 1 on an arrow that runs up
# or a cycle; import-linter checks the same layers, and cycles of any length, from pyproject.toml [tool.importlinter].
# Both always run, so one report shows everything.
imports: install-dev env
	@status=0; DJANGO_SETTINGS_MODULE=eventrelay.settings $(PY) -m tools.import_graph || status=1; \
	  $(VENV)/bin/lint-imports --no-cache || status=1; exit $$status

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the performance table of docs/benchmarks.md against its baselines, on real processes (docs/benchmarks.md):
# full sizes by default; `make bench BENCH_ARGS=--quick` for the < 2 minute smoke run.
bench: install-dev services env
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Regenerate the committed gRPC code (tests/test_protos.py fails when it is stale).
protos: install-dev
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. protos/eventrelay/v1/eventrelay.proto
