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

.PHONY: run test lint format bench services env db install protos clean browser screenshots

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

# PostgreSQL and Redis: start them with this machine's own commands when they are not answering.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "starting Redis"; \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
	    --dir /var/lib/redis --logfile /var/log/redis/ci.log; \
	  for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done; }

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
	@echo "  admin console   http://127.0.0.1:$(PORT)/admin/"
	@echo "  health          http://127.0.0.1:$(PORT)/healthz   readiness http://127.0.0.1:$(PORT)/readyz"
	@echo "  a token         $(PY) manage.py mint_token --topics users:123 --ttl 3600   (add --admin for an admin token)"
	@echo
	ER_HTTP_PORT=$(PORT) ER_GRPC_PORT=$(GRPC_PORT) $(VENV)/bin/honcho start

# Chromium for the browser tests: installed with apt when it is missing and we are root.
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] || { echo "the browser tests need $(CHROMIUM): apt-get install chromium (as root)"; exit 1; }; \
	  echo "installing Chromium"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: install services env browser
	$(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "models changed without a migration: run makemigrations"; exit 1; }
	$(PY) -m pytest $(PYTEST_ARGS)

# Refresh the committed docs/screenshots/*.png the README shows: the browser tests that take them, told to write
# there (a plain test run writes them to the ignored .test-logs/screenshots/docs/).
screenshots: install services env browser
	REFRESH_SCREENSHOTS=1 $(PY) -m pytest $$(grep -l '^from tests.browser import .*screenshot' tests/test_*.py) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the performance table of docs/benchmarks.md against its baselines, on real processes (docs/benchmarks.md):
# full sizes by default; `make bench BENCH_ARGS=--quick` for the < 2 minute smoke run.
bench: install services env
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Regenerate the committed gRPC code (tests/test_protos.py fails when it is stale).
protos: install
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. protos/eventrelay/v1/eventrelay.proto
