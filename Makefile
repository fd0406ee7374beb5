# Quick start:  make demo   (install + run the built-in demo)
#               make test   (install + run the whole test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxnis demo

# float32 tests first, then the float64 tests in their own process (x64 is global in JAX).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests
	JAX_ENABLE_X64=1 $(BIN)/python -m pytest -n 2 -m x64 tests

lint: $(STAMP)
	$(BIN)/ruff check .

# Every benchmark in turn, each writing benchmarks/results/: about two hours on 2 cores
# (phase_space.py alone about 70 minutes, nis.py and nis_seeds.py 8-9 each, vegas_init.py 6).
BENCHMARKS := phase_space flows gradients vegas_init nis nis_seeds

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
