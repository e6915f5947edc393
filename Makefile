# vidq — the two commands of the README, and the pieces they are made of.
PY := .venv/bin/python
SHELL := /bin/bash

.PHONY: run test setup setup-test lint typecheck unit integration e2e bench clean

run: setup            ## Install what is missing, start the whole stack, print URL and API key
	$(PY) -m shared.devstack

test: setup-test lint typecheck   ## Every test: lint, types, unit, integration, end to end
	$(PY) -m pytest -m "" -p no:cacheprovider

setup:
	./deploy/local/setup.sh

setup-test:
	./deploy/local/setup.sh --with-browser

lint:
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/lint-imports

typecheck:
	.venv/bin/mypy

unit:
	$(PY) -m pytest -m unit

integration: setup
	$(PY) -m pytest -m integration

e2e: setup
	$(PY) -m pytest -m e2e

bench: setup          ## Every benchmark, one after the other (figures in var/bench; docs/benchmarks.md)
	.venv/bin/pip install -q -e '.[bench]'
	$(PY) -m bench.time_to_ready
	$(PY) -m bench.encoding
	$(PY) -m bench.broker
	$(PY) -m bench.webhooks
	$(PY) -m bench.sse
	$(PY) -m bench.upload
	$(PY) -m bench.many_jobs

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
