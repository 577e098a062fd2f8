# Quick start: `make demo`, then `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
# e.g. make bench BENCH_ARGS="--models mlp,resnet8 --threads 1 --runs 10 --min-seconds 0"
BENCH_ARGS ?=
JOBS   ?= auto

.PHONY: demo test test-fast test-mcu conformance bench toolchain toolchain-mcu clean help

help:
	@echo "make demo         compile and run a bundled model, report what happened"
	@echo "make test         the whole test suite (installs what it needs)"
	@echo "make test-fast    the suite without whole-model and conformance tests"
	@echo "make test-mcu     the exported-project tests under QEMU (Cortex-M, RISC-V)"
	@echo "make conformance  the ONNX backend node-test suite: pass count"
	@echo "make bench        Ember vs onnxruntime and OpenVINO on the zoo -> bench/results/"
	@echo "                  (a quick run: make bench BENCH_ARGS=\"--models mlp --runs 10 --min-seconds 0\")"

# A C compiler is the one system tool Ember needs; install it when missing (Debian/Ubuntu).
toolchain:
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || { \
	  echo "No C compiler found; installing gcc with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq gcc libc6-dev || { \
	    echo "error: could not install a C compiler; install gcc (or clang) and retry" >&2; exit 1; }; }

# Cross compilers and QEMU for `ember export` projects (Debian/Ubuntu packages). `make test`
# asks for them with MCU_OPTIONAL=1: where they cannot be installed it warns, and the QEMU
# tests skip (each says why); `make test-mcu` needs them.
MCU_PACKAGES := arm-none-eabi-gcc:gcc-arm-none-eabi arm-none-eabi-gcc:libnewlib-arm-none-eabi \
	qemu-system-arm:qemu-system-arm qemu-system-riscv32:qemu-system-misc \
	riscv64-unknown-elf-gcc:gcc-riscv64-unknown-elf
MCU_OPTIONAL ?=
toolchain-mcu: toolchain
	@missing=""; for pair in $(MCU_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get (for the microcontroller tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install \
	      -y -qq --no-install-recommends $$missing >/dev/null; } || { \
	    if [ -n "$(MCU_OPTIONAL)" ]; then \
	      echo "warning: could not install$$missing: the QEMU tests will be skipped" >&2; \
	    else echo "error: could not install$$missing" >&2; exit 1; fi; }; fi

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
	@$(MAKE) --no-print-directory toolchain-mcu MCU_OPTIONAL=1
	$(PY) -m pytest -n $(JOBS) -q -p no:cacheprovider

test-fast: toolchain $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

test-mcu: toolchain-mcu $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -p no:cacheprovider -m mcu tests/export

conformance: toolchain $(STAMP)
	$(PY) tools/conformance.py

bench: toolchain $(BENCH_STAMP)
	$(PY) -m ember.bench.zoo $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
