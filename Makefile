# Every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= quick

.PHONY: bench demo ui test microbench lint clean

ui: $(STAMP)
	$(BIN)/maillab ui

demo: $(STAMP)
	$(BIN)/maillab demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/maillab bench --profile $(PROFILE) $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Saves every run under .benchmarks/ and fails on a median slowdown above the threshold
# against the previous saved run (absolute on this machine, ratios across machines).
MICROBENCH_THRESHOLD ?= 0.25
microbench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-autosave -q $(PYTEST_ARGS)
	$(BIN)/python -m benchmarks.ratios --threshold $(MICROBENCH_THRESHOLD)

lint: $(STAMP)
	$(BIN)/ruff check apps fakesmtp loadtests reports maillab tests benchmarks
	$(BIN)/mypy apps fakesmtp --ignore-missing-imports

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks
