# Headwater's developer targets. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXAMPLE ?= example
PORT    ?=

.PHONY: help install demo lint typecheck test bench clean

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/headwater: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/headwater  ## create .venv and install Headwater with its dev tools

demo: install  ## create ./example (once) and start Headwater on it
	@test -f $(EXAMPLE)/headwater.toml || $(BIN)/headwater init $(EXAMPLE)
	$(BIN)/headwater --project $(EXAMPLE) up $(if $(PORT),--port $(PORT))

lint: install  ## ruff (lint and format check)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install  ## mypy --strict on the package
	$(BIN)/mypy

test: install lint typecheck  ## lint, type-check and run every test
	$(BIN)/pytest

bench: install  ## run the ingest benchmark
	$(BIN)/python benchmarks/ingest.py

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
