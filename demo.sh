#!/usr/bin/env bash
# The main job, offline: train -> eval -> compare on two versions of a tagged dataset.
# v1 has broken `source=ai_contaminated` rows; v2 repairs them. Everything lives in .verifily/demo/.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export VERIFILY_DATASETS_DIR=${VERIFILY_DATASETS_DIR:-.verifily/demo/datasets}
PY=.venv/bin/python
V=.venv/bin/verifily
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Build the demo base model (cached) and the dataset files"
$PY -m verifily_core.testing.demo prepare --dir .verifily/demo

step "Create dataset versions ds_demo@v1 and ds_demo@v2 (immutable, hashed)"
for v in v1 v2; do
  if ! $V dataset show ds_demo@$v >/dev/null 2>&1; then
    $V dataset create --id ds_demo --version $v --task sft --from-dir .verifily/demo/data/$v \
      --test .verifily/demo/data/test.jsonl
  fi
done
$V dataset diff ds_demo@v1 ds_demo@v2

run_path() { $PY -c 'import json,sys; print(json.load(sys.stdin)["artifact_path"])'; }
step "Train a LoRA run on each version"
RUN1=$($V train --config examples/demo/sft.yaml --dataset ds_demo@v1 --name demo_v1 eval.enabled=false --format json | run_path)
RUN2=$($V train --config examples/demo/sft.yaml --dataset ds_demo@v2 --name demo_v2 eval.enabled=false --format json | run_path)

step "Evaluate each run, sliced by source"
$V eval --run "$RUN1" --slice-by source
$V eval --run "$RUN2" --slice-by source

step "Compare v1 -> v2 per source"
$V compare --runs "$RUN1,$RUN2" --metric token_f1 --slice-by source
$V compare --runs "$RUN1,$RUN2" --metric token_f1 --slice-by source --format json --output .verifily/demo/compare.json >/dev/null

step "The hardest examples of the v1 run"
head -n 3 "$RUN1/eval/hard_examples.jsonl"

step "Verify the v1 run's hash chain"
$V reproduce --run "$RUN1" --verify-only
