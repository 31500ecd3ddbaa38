# Two commands do all set-up on a fresh machine:
#   make demo   - the main job end to end on real data, offline, into ./cache and ./runs
#   make test   - the test suite (CPU, no network beyond PyPI for the real-model test's wheels)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0   # the CPU build on local disk; other pins download GBs
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $@

setup: $(BIN)/.installed

# The main job: all-mpnet-base-v2 teaches all-MiniLM-L6-v2 on real tweets, on all rows and on
# a 10% selection, offline; prints test accuracy side by side. A second run reuses the cache.
demo: setup
	$(BIN)/selectkd demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
