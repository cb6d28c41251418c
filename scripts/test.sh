#!/usr/bin/env bash
# The default test suite: unit, smoke, notebook and browser tiers (slow and gpu are opt-in).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABKIT_VENV:-.venv}
exec "$VENV/bin/python" -m pytest -m "not slow and not gpu" "$@"
