# The two commands of the README, plus helpers. Every target sets up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup tour lab test test-slow lint samples clean-cache vllm-env launch
setup:
	@bash scripts/setup.sh

# vLLM for CPU in its own venv (.venv-vllm): it pins an older transformers than labkit.
vllm-env:
	@bash scripts/setup_vllm.sh

tour: setup
	$(VENV)/bin/labkit tour

# JupyterLab on notebooks/, offline, on .venv's kernel; prints the URL (Ctrl-C stops it).
lab: setup
	$(VENV)/bin/labkit lab

test: setup
	bash scripts/test.sh

test-slow: setup
	$(PY) -m pytest -m slow

# A training stage in several processes (DDP through accelerate; gloo without a GPU), e.g.
#   make launch STAGE=sft PROCS=2 ARGS="--set max_steps=20"
STAGE ?= sft
PROCS ?= 2
launch: setup
	$(VENV)/bin/labkit launch --processes $(PROCS) $(STAGE) $(ARGS)

lint: setup
	$(PY) -m ruff check labkit kernels tests bench notebooks
	$(VENV)/bin/lint-imports

samples: setup
	$(PY) -m labkit.data.samples build
