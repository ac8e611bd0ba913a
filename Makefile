# Two entry points: `make run` (the main job on the built-in corpus) and `make test`.
# Each creates .venv on first use; only Python 3.11+ is needed. Every package, direct or transitive,
# is installed at the exact version of requirements.lock; `make lock` refreshes it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= default
WORKERS ?= $(shell $(PY) -c "import os; print(min(2, len(os.sched_getaffinity(0))))")
LOCK := requirements.lock
EXTRAS ?= dev,hf
# pip, setuptools and the project build without isolation, so the build uses the locked setuptools.
INSTALL = $(BIN)/python -m pip install -q --no-build-isolation -c $(LOCK)

.PHONY: run device test lint presets notebook lock clean-venv

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip setuptools
	$(INSTALL) -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip check
	echo "$(EXTRAS)" > $@

run: $(BIN)/.installed
	$(BIN)/python -m experiments.sweeps tradeoff --scale $(SCALE) --seeds 3 --workers $(WORKERS) \
		$(if $(filter default,$(SCALE)),--update-figures)

# one large GPU (H100/H200 class): the recall and tradeoff sweeps at their device scale, figures and
# tables under results/figures/device/ (recall first: the tradeoff figure's recall panel reads its summary)
device: $(BIN)/.installed
	$(BIN)/python -m experiments.sweeps recall --scale device
	$(BIN)/python -m experiments.sweeps tradeoff --scale device

# The device check (scripts/device_check.sh; kernels/BENCHMARKS.md): on a GPU machine as it is, with no
# venv of its own (a device reaches no registry); CHECK_ARGS=--quick, --cpu or "--only bench,decode".
.PHONY: device-check
device-check:
	bash scripts/device_check.sh $(CHECK_ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=30

presets: $(BIN)/.installed
	$(BIN)/python -m arch.presets

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check .

# Jupyter (the `notebook` extra, locked like the rest), then JupyterLab on notebooks/.
notebook: $(BIN)/.installed
	$(INSTALL) -e ".[$(EXTRAS),notebook]"
	$(BIN)/jupyter lab notebooks/

# Resolve the ranges of pyproject.toml afresh (every extra) in a throwaway venv and pin what it got.
# Local build labels (torch's +cpu) are dropped: `torch==2.13.0` still takes a +cpu file where one lies.
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip setuptools
	.lock-venv/bin/python -m pip install -q -e ".[dev,hf,notebook]"
	{ echo "# Exact versions of every package that 'make' installs (a pip constraints file)."; \
	  echo "# Made by 'make lock' with $$(.lock-venv/bin/python --version) on $$(date -u +%F); do not edit."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//'; \
	} > $(LOCK)
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
