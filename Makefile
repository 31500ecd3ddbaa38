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

# The main job, offline: all-MiniLM-L6-v2 fine-tuned end to end on real tweets teaches its own first 3
# layers; no KD, full KD, 10% default, 10% random and full data for the same time, side by side, with
# runs/demo/table.json and runs/demo/curve.png. A second run reuses the cache and the finished runs.
demo: setup
	$(BIN)/selectkd demo

# One pytest worker per core (pytest-xdist): most of a test's time is a CLI subprocess importing torch and
# transformers (~6 s), which one core does alone; on 2 cores the suite takes 12-17 min instead of 24 (755 s on
# 2026-11-29; keeping each test file on one worker, --dist loadfile, measured the same that hour: 746 s).
test: setup
	$(BIN)/python -m pytest -q -n auto $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -n auto -m "not slow" $(PYTEST_ARGS)
