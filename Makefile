# hookline: `make run` serves on http://127.0.0.1:8000, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-unit lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve the app (SQLite under ./var unless HOOKLINE_DATABASE_URL says otherwise). For local
## development deliveries may reach receivers on this machine; `hookline serve` alone refuses them.
run: $(STAMP)
	HOOKLINE_ALLOW_NETWORKS="$${HOOKLINE_ALLOW_NETWORKS-127.0.0.0/8,::1/128}" $(BIN)/hookline serve

## Every test: unit, integration on SQLite and PostgreSQL, end-to-end with real processes.
test: $(STAMP)
	-@bash scripts/postgres-up.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests

format: $(STAMP)
	$(BIN)/ruff format src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
