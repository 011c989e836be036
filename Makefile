# The two commands README.md promises: `make demo` and `make test`.
.PHONY: demo test test-fast lint bench soak

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

bench:
	./scripts/setup.sh test
	.venv/bin/python bench/run.py

soak:
	./scripts/setup.sh test
	.venv/bin/python -m pytest -q -m soak
