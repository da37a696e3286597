# The commands of CONTRACT section 1. Everything runs from the repo root, in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install up down demo test bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@command -v docker-compose >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null) || \
		echo "warning: Debian's docker-compose could not be installed"
	touch $(STAMP)

up: install
	$(PY) -m deploy.local.stack up

down:
	$(PY) -m deploy.local.stack down

demo: up
	$(PY) -m deploy.local.demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

bench: up
	$(PY) -m bench.run
