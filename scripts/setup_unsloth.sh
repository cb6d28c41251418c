#!/usr/bin/env bash
# Installs Unsloth's CPU backend into labkit's .venv for tests/stages/test_unsloth_cpu.py; safe to run again.
# Unsloth pins transformers <= 5.17, trl <= 1.15 and datasets < 5 and pulls torchvision, xformers and a
# torch build: a plain install would replace labkit's torch 2.13.0 and its pinned stack. Its CPU backend
# (stock transformers + PEFT + TRL with a few patches) imports with what labkit already has, so both
# packages go in with --no-deps, and torch is checked before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABKIT_VENV:-.venv}
SPEC=${LABKIT_UNSLOTH_SPEC:-unsloth==2026.10.9 unsloth_zoo==2026.10.9}
PY="$VENV/bin/python"
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }
torch_version() { "$PY" -c "import torch; print(torch.__version__.split('+')[0])"; }

[ "$(torch_version)" = 2.13.0 ] || { echo "labkit setup-unsloth: $VENV has no torch 2.13.0" >&2; exit 1; }
# Already there at the asked versions: nothing to do (the tests themselves check that it imports).
# shellcheck disable=SC2086  # SPEC is a list of requirement specifiers
"$PY" - $SPEC <<'PY' 2>/dev/null && exit 0
import importlib.metadata as md
import sys

for spec in sys.argv[1:]:
    name, _, version = spec.partition("==")
    if md.version(name) != version:
        sys.exit(1)
PY
echo "labkit setup-unsloth: installing $SPEC into $VENV (--no-deps)" >&2
# shellcheck disable=SC2086
pip install --no-deps $SPEC
if [ "$(torch_version)" != 2.13.0 ]; then
  echo "labkit setup-unsloth: torch $(torch_version) replaced 2.13.0" >&2
  exit 1
fi
# Its import picks the backend: it must be the CPU one here (UNSLOTH_FORCE_CPU: also on a GPU host).
UNSLOTH_FORCE_CPU=1 OMP_NUM_THREADS=1 "$PY" - <<'PY'
import sys

import unsloth

if unsloth.DEVICE_TYPE != "cpu":
    sys.exit(f"labkit setup-unsloth: unsloth {unsloth.__version__} chose {unsloth.DEVICE_TYPE}, not its CPU backend")
print(f"labkit setup-unsloth: unsloth {unsloth.__version__}, CPU backend", file=sys.stderr)
PY
