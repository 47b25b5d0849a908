# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
# `make check` runs the project's own checks (format, lint, types) with the pinned tools of the dev extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export LIFECYCLE_SECRET ?= demo-secret-change-me

.PHONY: demo test check install browser dovecot postgres clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(DEV_STAMP)

install: $(STAMP)

# The sample store on the embedded default (SQLite, file sender): one tick, emails in outbox/.
demo: $(STAMP)
	$(BIN)/lifecycle validate
	$(BIN)/lifecycle db upgrade
	$(BIN)/lifecycle demo
	$(BIN)/lifecycle tick
	@echo "emails written to outbox/: $$(ls outbox | wc -l)"

# Debian's Chromium for the tests that look at pages and emails as a person would (no downloads).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core)

# Debian's Dovecot: the real IMAP server that the bounce tests start for themselves (never as a service).
dovecot:
	command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ] || (apt-get update && apt-get install -y --no-install-recommends dovecot-imapd)

test: $(STAMP) browser dovecot
	$(BIN)/python -m pytest -q -rs

# Any finding fails: code not as ruff formats it, a lint finding, a type error, a broken link in the docs.
check: $(DEV_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet

# wrk, Debian's HTTP load generator, for the web benchmark.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y --no-install-recommends wrk)
	$(BIN)/python bench/tick_welcome.py
	$(BIN)/python bench/web_latency.py

clean:
	rm -rf $(VENV) outbox site lifecycle.db lifecycle.db-wal lifecycle.db-shm
