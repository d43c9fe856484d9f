# Developer entry points. Nothing needs an activated venv: every tool runs from $(VENV).
#   make env        create .venv and install the package editable with the dev extras
#   make test       import contract, manifest check, fast tests (what CI runs); installs
#                   Xvfb and Qt's libraries first when missing (.ci/system-deps)
#   make test-slow  tests that need the real data (us-universal, us-new-task-dev) or long runs
#   make lint       ruff check + format check + mypy on the core
#   make demo       napari + sample echo cine segmented (headless: files in demo-output/)
#   make clean      remove build outputs and caches (make distclean also removes .venv)

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.propl-installed

# Without an NVIDIA GPU, take torch's CPU build: a bare `torch>=2.2` pulls the 3 GB CUDA build.
# PyTorch's CPU index serves it as `2.x.y+cpu`, which pip prefers to PyPI's `2.x.y`.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
PIP_CONSTRAINTS :=
TORCH_INDEX :=
else
PIP_CONSTRAINTS := -c constraints-cpu.txt
TORCH_INDEX := --extra-index-url $(TORCH_CPU_INDEX)
endif

.PHONY: env test test-slow lint demo clean distclean

env: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the dependencies change; torch goes first so the rest never
# re-resolves it.
$(STAMP): pyproject.toml constraints-cpu.txt | $(PY)
	$(PY) -m pip install $(PIP_CONSTRAINTS) $(TORCH_INDEX) torch
	$(PY) -m pip install $(PIP_CONSTRAINTS) -e ".[dev]"
	touch $@

# --durations: every log names the slowest tests, to keep the suite at a few minutes.
test: env
	bash .ci/system-deps test
	$(BIN)/lint-imports --no-cache
	$(PY) -m npe2 validate napari_propl
	$(PY) -m pytest -m "not slow" --durations=15

test-slow: env
	$(PY) -m pytest -m slow

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy src/propl

# napari with the sample echo cine segmented; without a display: masks + overlay PNG files
demo: env
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then bash .ci/system-deps gui; fi
	$(PY) -m napari_propl.demo

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache .tox .import_linter_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
		-prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
