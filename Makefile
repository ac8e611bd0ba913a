# Two entry points: `make run` (the main job on the built-in corpus) and `make test`.
# Each creates .venv on first use; only Python 3.11+ is needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= default

.PHONY: run test lint presets clean-venv

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,hf]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/python -m experiments.sweep tradeoff --scale $(SCALE)

test: $(BIN)/.installed
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

presets: $(BIN)/.installed
	$(BIN)/python -m arch.presets

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check .

clean-venv:
	rm -rf $(VENV)
