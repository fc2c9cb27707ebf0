# Set-up and the two entry points the README starts with:
#   make demo   installs everything and runs the main job on the embedded default
#   make test   installs what the tests need and runs the whole test suite
# Everything lives in a virtual environment inside the checkout (.venv), at the exact
# versions of requirements/constraints.txt (refresh them with `make lock`).
#
# llama.cpp (llama-cpp-python) compiles from source. By default it is built for any CPU of
# this architecture (x86-64 with AVX2, or any aarch64), not for the build machine: a
# native build uses every instruction set the build machine has (AVX-512, AMX) and
# segfaults on some of them (virtualised AMX Xeons). The portable wheel is built once per
# version and kept in $(WHEELS) for later checkouts. LLAMA_NATIVE=1 builds for this CPU.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
TORCH_VERSION ?= 2.13.0
LLAMA_NATIVE ?= 0
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

LLAMA_VERSION := $(shell sed -n "s/^llama-cpp-python==//p" $(CONSTRAINTS) 2>/dev/null)
ARCH := $(shell uname -m)
PYTAG := $(shell $(PYTHON) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/fineinstructions/wheels
ifeq ($(LLAMA_NATIVE),1)
  LLAMA_BUILD := native
  LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON
else ifeq ($(ARCH),x86_64)
  LLAMA_BUILD := portable
  LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
else
  # aarch64: NEON is part of the base architecture; no CPU-specific extensions.
  LLAMA_BUILD := portable
  LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
endif
LLAMA_WHEELS := $(WHEELS)/llama-cpp-python-$(LLAMA_VERSION)-$(PYTAG)-$(ARCH)-portable
LLAMA_MARK := $(VENV)/.llama-$(LLAMA_VERSION)-$(LLAMA_BUILD)

.PHONY: demo test install lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make needs Python >= 3.11: \
	$(CONSTRAINTS) pins releases (numpy 2.4, ...) that have no build for $$($(PYTHON) --version). \
	Run it with a newer one: make PYTHON=python3.12 ..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The portable wheel: built without pip's wheel cache (which may hold a native build of the
# same version from an earlier `pip install`), then installed from $(LLAMA_WHEELS) only.
# The native build is never cached: it belongs to this CPU.
$(LLAMA_MARK): $(CONSTRAINTS) | $(BIN)/python
	@test -n "$(LLAMA_VERSION)" || { echo "no llama-cpp-python pin in $(CONSTRAINTS)"; exit 2; }
	rm -f $(VENV)/.llama-* $(VENV)/.installed
ifeq ($(LLAMA_BUILD),native)
	@echo "building llama-cpp-python $(LLAMA_VERSION) for this CPU (LLAMA_NATIVE=1; several minutes)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --force-reinstall --no-deps \
		--no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_VERSION)"
else
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_VERSION) for any $(ARCH) CPU (once; several minutes)"; \
		rm -rf $(LLAMA_WHEELS).tmp && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-cache-dir --no-deps \
			--no-binary llama-cpp-python -w $(LLAMA_WHEELS).tmp "llama-cpp-python==$(LLAMA_VERSION)" && \
		mkdir -p $(WHEELS) && rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(BIN)/pip install --no-index --find-links $(LLAMA_WHEELS) --force-reinstall --no-deps \
		"llama-cpp-python==$(LLAMA_VERSION)"
endif
	touch $@

# torch is pinned to the CPU build first, so no extra pulls several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(LLAMA_MARK)
	$(BIN)/pip install -c $(CONSTRAINTS) "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -c $(CONSTRAINTS) -e ".[embedded,transformers,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/fineinstructions demo

test: install
	$(BIN)/python -m pytest

# Resolve pyproject.toml's ranges to today's newest versions and pin them (nothing is built).
lock: | $(BIN)/python
	$(BIN)/python requirements/lock.py "torch==$(TORCH_VERSION)"

clean:
	rm -rf $(VENV) demo-output
