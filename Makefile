# The two commands README.md promises: `make demo` and `make test`.
.PHONY: demo test lint bench soak

demo:
	./scripts/setup.sh demo
	.venv/bin/deepracer-exporter demo

lint:
	./scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -q

bench:
	./scripts/setup.sh test
	.venv/bin/python bench/run.py

soak:
	./scripts/setup.sh test
	.venv/bin/python -m pytest -q -m soak
