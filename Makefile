# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | cksum | cut -d' ' -f1)

.PHONY: env demo test test-fast docs clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=64" wheel
	# the CPU build of torch (a plain `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*; touch $@

env: $(STAMP)

demo: env
	$(BIN)/flightc demo

# test workers (pytest-xdist): one per core, at most 4 (each holds compiled models and simulators in memory);
# a test file runs on one worker, so its module fixtures (a Verilator model, a compiled bundle) are made once
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

# everything: what .ci/run calls
test: env
	$(PYTEST)

# everything but the RTL (Verilator), synthesis (yosys) and slow tiers: a few minutes on two cores
test-fast: env
	$(PYTEST) -m "not rtl and not synth and not slow"

docs: env
	$(BIN)/flightc isa-doc -o docs/isa.md
	$(BIN)/python -m flightc.schema -o docs/json.md

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
