#!/usr/bin/env bash
# The main job, offline: set up, then show the plugins and a validated training plan.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
V=.venv/bin/verifily
$V plugins
$V train --config examples/sft-causal-lm.yaml --dry-run
