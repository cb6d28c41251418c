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
exec "$VENV/bin/python" -m pytest -m "not slow and not gpu" "$@"
