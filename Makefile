# The two commands README.md promises: `make demo` and `make test`.
.PHONY: demo test test-fast test-latest lint lock bench soak

demo:
	./scripts/setup.sh demo
	.venv/bin/deepracer-exporter demo

lint:
	./scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -q

# Unit, parsing and derivation tests only (about half a minute): the edit-test loop.
test-fast:
	./scripts/setup.sh test
	.venv/bin/python -m pytest -q -m fast

# The suite against the newest releases pyproject.toml allows, in a throwaway venv (early warning).
test-latest:
	./scripts/test-latest.sh

# Regenerate requirements/*.txt from pyproject.toml (UPGRADE=1: move every pin to the newest).
lock:
	./scripts/setup.sh test
	UPGRADE=$(UPGRADE) ./scripts/lock.sh

bench:
	./scripts/setup.sh test
	.venv/bin/python bench/run.py

soak:
	./scripts/setup.sh test
	.venv/bin/python -m pytest -q -m soak
