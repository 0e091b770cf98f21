# The two commands of the README are `make demo` and `make test`; `make dev` and `make bench` use the same set-up.
SHELL := /bin/bash

.PHONY: install browser demo dev docs test lint bench

install:
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@# compiled once: with PYTHONDONTWRITEBYTECODE set (as on CI) each process would compile dagster, dbt
	@# and pandas again (~4 s of every `sg-orch run`)
	@uv sync --frozen --quiet --compile-bytecode
	@# the dbt manifest the definitions load, parsed again after a change to the models (a first night
	@# would otherwise parse the whole project inside its run)
	@uv run --frozen sg-orch prepare

# Debian's Chromium for the browser test (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser test"; fi; }

demo: install
	uv run sg-orch demo

dev: install
	uv run sg-orch dev

# dbt's documentation of every model, on http://127.0.0.1:8580 (PORT=... for another)
docs: install
	uv run sg-orch docs $(if $(PORT),--port $(PORT))

lint: install
	uv run ruff check .
	uv run ruff format --check .

test: install browser lint
	uv run pytest

bench: install
	uv run sg-orch bench
