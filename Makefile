# Every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= quick

.PHONY: bench services chromium webui ui test microbench lint clean

ui: $(STAMP) webui
	$(BIN)/maillab ui

# The lab's build of locust's web UI (the Lab tab's charts and controls, the lab's start
# form): the locust-ui package and React from the npm registry, at the versions
# webui/package-lock.json pins, built with Vite into webui/dist, which locust serves. Without
# npm, locust's stock UI shows the Lab tab's figures as a table.
WEBUI_SOURCES := webui/package.json webui/package-lock.json webui/index.html \
  webui/vite.config.js $(wildcard webui/src/*)
webui: webui/dist/index.html
webui/dist/index.html: $(WEBUI_SOURCES)
	@command -v npm >/dev/null 2>&1 || { echo "npm is not installed: the Lab tab stays a \
	  table in locust's stock UI"; exit 0; }; \
	cd webui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP) $(if $(filter scale,$(PROFILE)),services)
	$(BIN)/maillab bench --profile $(PROFILE) $(BENCH_ARGS)

# PostgreSQL for PROFILE=scale: Debian's cluster, started where it is installed but stopped
# (the bench makes and drops its own databases on it). The bench starts redis-server itself.
services:
	@command -v pg_lsclusters >/dev/null 2>&1 || { echo "PostgreSQL is not installed: \
	  PROFILE=scale needs --database-url"; exit 0; }; \
	pg_lsclusters --no-header | while read -r version cluster port status rest; do \
	  [ "$$status" = online ] || pg_ctlcluster "$$version" "$$cluster" start || \
	  echo "PostgreSQL $$version/$$cluster could not be started"; done

# Debian's Chromium, driven by Playwright for maillab probe and for the tests that open the
# report and sign up in a real browser. Where it cannot be installed (not root, no Debian
# registry) those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the browser test will skip"; }

# Two pytest processes (pytest-xdist): most of the suite waits on real servers, sockets,
# browsers and subprocesses rather than computing, so two keep a 2-core machine busy. Three
# were faster (6 min 31 s against 7 min 40 s, 1023 tests) but starved the load generator of a
# timing test (start lag p99 74 ms against its 25 ms bound on a fresh clone). Tests sharing one
# expensive fixture carry an xdist_group mark and run in one process. TEST_PROCESSES=0 runs the
# suite in this process alone.
TEST_PROCESSES ?= 2
test: $(STAMP) chromium webui
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadgroup $(PYTEST_ARGS)

# Saves every run under .benchmarks/ and fails on a median slowdown above the threshold
# against the median of the last three saved runs (absolute on this machine, ratios across
# machines).
MICROBENCH_THRESHOLD ?= 0.25
microbench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-autosave -q $(PYTEST_ARGS)
	$(BIN)/python -m benchmarks.ratios --threshold $(MICROBENCH_THRESHOLD)

# Every package, the tests and the benchmarks: ruff, then mypy.
LINTED := apps fakesmtp loadtests reports maillab tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy $(LINTED)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks webui/node_modules webui/dist
