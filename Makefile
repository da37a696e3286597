# The commands of CONTRACT section 1. Everything runs from the repo root, in .venv.
# The local stack itself (PostgreSQL, Apache Kafka, the four services) is deploy/local/stack.py.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# Re-installs only when pyproject.toml changes, so `make up`/`make test` stay fast.
STAMP := $(VENV)/.installed

.PHONY: install up down status demo test bench chaos lint

install: $(STAMP)

$(STAMP): pyproject.toml deploy/local/bootstrap.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@# From Debian's packages: PostgreSQL's server when none answers, docker-compose, kcat,
	@# chromium and prometheus (see the script).
	deploy/local/bootstrap.sh
	@# Apache Kafka's jars from Maven Central (once; .cache/kafka-<version>).
	$(PY) -c 'from deploy.local.kafka import ensure_jars; ensure_jars()'
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

# The suite starts its own Apache Kafka and, when none answers, PostgreSQL (tests/conftest.py).
test: install
	$(RUFF) check .
	$(PY) -m pytest

bench: up
	$(PY) -m bench.run

# The fault tests under load, on a stack of their own (.run/chaos, free ports): see README "Chaos".
chaos: install
	$(PY) -m bench.chaos
