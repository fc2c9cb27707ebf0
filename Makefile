# Set-up and the two entry points the README starts with:
#   make demo   installs everything and runs the main job on the embedded default
#   make test   installs what the tests need and runs the whole test suite
# Everything lives in a virtual environment inside the checkout (.venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The llama-cpp-python wheel is built from source once; pip caches it afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
TORCH_VERSION ?= 2.13.0

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned to the CPU build first, so no extra pulls several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[embedded,transformers,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/fineinstructions demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-output
