# Quick start: `make demo`, then `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
# e.g. make bench BENCH_ARGS="--models mlp,resnet8 --threads 1 --runs 10"
BENCH_ARGS ?=
JOBS   ?= auto

.PHONY: demo test test-fast conformance bench toolchain clean help

help:
	@echo "make demo         compile and run a bundled model, report what happened"
	@echo "make test         the whole test suite (installs what it needs)"
	@echo "make test-fast    the suite without whole-model and conformance tests"
	@echo "make conformance  the ONNX backend node-test suite: pass count"
	@echo "make bench        Ember vs onnxruntime and OpenVINO on the zoo -> bench/results/"
	@echo "                  (a quick run: make bench BENCH_ARGS=\"--models mlp --runs 10\")"

# A C compiler is the one system tool Ember needs; install it when missing (Debian/Ubuntu).
toolchain:
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || { \
	  echo "No C compiler found; installing gcc with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq gcc libc6-dev || { \
	    echo "error: could not install a C compiler; install gcc (or clang) and retry" >&2; exit 1; }; }

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Ember needs Python 3.10+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# The peers Ember is measured against (the `bench` extra), beside what the tests need.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@touch $(BENCH_STAMP)

demo: toolchain $(STAMP)
	$(PY) examples/demo.py

test: toolchain $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -p no:cacheprovider

test-fast: toolchain $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

conformance: toolchain $(STAMP)
	$(PY) tools/conformance.py

bench: toolchain $(BENCH_STAMP)
	$(PY) -m ember.bench.zoo $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
