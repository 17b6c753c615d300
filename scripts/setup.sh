#!/usr/bin/env bash
# Create .venv (if needed) and install verifily-train with the tested, pinned versions.
# Re-running is cheap: the install is skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.verifily-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned in the same step as everything else (an unpinned torch pulls a multi-GB CUDA build).
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[dev,qlora,mlflow,hpo]"
  echo "$want" > "$stamp"
fi
