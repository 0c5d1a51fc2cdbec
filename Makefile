# Two commands matter: `make demo` and `make test`. Both bootstrap .venv on first use, with the test tools ([dev])
# and the local worker's whisper engine ([worker]), which the demo and the slow tests use.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell for p in python3.11 python3.12 python3.10 python3; do \
	  $$p -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLI := $(BIN)/bytewax-speechmatics
# The suite waits on brokers, workers and flows more than it computes: two processes halve its time on 2 cores.
TEST_PROCESSES ?= 2

.PHONY: install kafka-up kafka-down tools test test-fast demo bench lint clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python 3.10-3.12 (bytewax 0.21.1 has no 3.13 wheels)"; exit 1; }
	@echo "setup: creating $(VENV) with $(PYTHON) and installing bytewax-speechmatics[dev,worker] ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,worker]'
	@touch $(STAMP)

install: $(STAMP)

kafka-up: install
	$(CLI) kafka up

kafka-down: install
	$(CLI) kafka down

# helm, promtool, prometheus and the manifest validator, built once from the Go module proxy into
# BWSM_CACHE_DIR/tools (deploy/tools/build.sh); later runs find them there.
tools:
	bash deploy/tools/build.sh helm promtool prometheus kubecheck >/dev/null

test: install kafka-up tools
	$(BIN)/pytest -q -n $(TEST_PROCESSES)

test-fast: install
	$(BIN)/pytest -q -m "not kafka and not slow and not tools"

demo: install
	$(CLI) demo

bench: install kafka-up
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
