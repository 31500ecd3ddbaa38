# Two commands do all set-up on a fresh machine:
#   make demo   - the main job end to end on real data (offline assets + score) into ./cache
#   make test   - the test suite (CPU, no network beyond PyPI for the real-model test's wheels)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # the CPU build on local disk; other pins download GBs
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $@

setup: $(BIN)/.installed

# The demo: 2,000 real tweets (positive/negative). Teacher: all-mpnet-base-v2 with a head
# fitted on frozen features; student: all-MiniLM-L6-v2. A second `make demo` reuses it all.
DEMO_ROWS ?= 2000
demo: setup
	$(BIN)/selectkd assets install --models minilm-l6 --models mpnet-base --data tweets-binary
	@if [ -f cache/teachers/mpnet-tweets-binary/config.json ]; then echo "teacher cache/teachers/mpnet-tweets-binary exists: reused"; else \
	$(BIN)/selectkd finetune --data tweets-binary --limit $(DEMO_ROWS) --eval-limit 500 \
		--model mpnet-base --head-only --out cache/teachers/mpnet-tweets-binary; fi
	$(BIN)/selectkd score --data tweets-binary --split train --limit $(DEMO_ROWS) \
		--teacher cache/teachers/mpnet-tweets-binary --student minilm-l6
	$(BIN)/selectkd cache ls

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
