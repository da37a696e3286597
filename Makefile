# The commands of CONTRACT section 1. Everything runs from the repo root, in .venv.
# The local stack itself (Postgres, Tansu, the four services) is deploy/local/stack.py.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# Re-installs only when pyproject.toml changes, so `make up`/`make test` stay fast.
STAMP := $(VENV)/.installed

.PHONY: install up down status demo test bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@# Debian's docker-compose validates docker-compose.yml (no Docker engine needed).
	@if command -v docker-compose >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; \
	else \
		echo "warning: no apt-get, so no docker-compose: the compose file check will fail"; \
	fi
	touch $(STAMP)

up: install
	$(PY) -m deploy.local.stack up

down:
	$(PY) -m deploy.local.stack down

status:
	$(PY) -m deploy.local.stack status

demo: up
	$(PY) -m deploy.local.demo

lint: install
	$(RUFF) check .
	$(RUFF) format --check .

# The suite starts its own broker (Tansu on a free port) and database (tests/conftest.py).
test: install
	$(RUFF) check .
	$(PY) -m pytest

bench: up
	$(PY) -m bench.run
