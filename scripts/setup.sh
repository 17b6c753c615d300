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
# Headless Chromium renders the HTML report in tests/test_report_e2e.py (it skips without one).
# Tried once per .venv, as root or with passwordless sudo where apt-get exists; failure is only a note.
chromium_stamp=.venv/.verifily-chromium-tried
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ ! -e "$chromium_stamp" ]; then
  sudo_cmd=none
  if [ "$(id -u)" = 0 ]; then
    sudo_cmd=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo_cmd="sudo -n"
  fi
  if [ "$sudo_cmd" != none ]; then
    touch "$chromium_stamp"
    if ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium >/dev/null 2>&1; then
      echo "note: could not install chromium with apt-get; the HTML report test will be skipped" >&2
    fi
  fi
fi
