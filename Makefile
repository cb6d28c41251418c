# The two commands of the README, plus helpers. Every target sets up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup tour test test-slow lint samples clean-cache vllm-env
setup:
	@bash scripts/setup.sh

# vLLM for CPU in its own venv (.venv-vllm): it pins an older transformers than labkit.
vllm-env:
	@bash scripts/setup_vllm.sh

tour: setup
	$(VENV)/bin/labkit tour

test: setup
	bash scripts/test.sh

test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(PY) -m ruff check labkit kernels tests bench notebooks
	$(VENV)/bin/lint-imports

samples: setup
	$(PY) -m labkit.data.samples build
