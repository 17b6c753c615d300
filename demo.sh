#!/usr/bin/env bash
# The main job, offline: train -> eval -> compare on two versions of a tagged dataset.
# v1 has broken `source=ai_contaminated` rows; v2 repairs them. Everything lives in .verifily/demo/.
#   ./demo.sh                          SFT: LoRA on a small Llama-architecture model
#   ./demo.sh --task classification    classification: a LoRA classifier on a small BERT encoder
set -euo pipefail
cd "$(dirname "$0")"
TASK=sft
while [ $# -gt 0 ]; do
  case "$1" in
    --task) TASK=${2:-}; shift 2 ;;
    --task=*) TASK=${1#--task=}; shift ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (use --task sft or --task classification)" >&2; exit 1 ;;
  esac
done
case "$TASK" in
  sft) DS=ds_demo ;;
  classification) DS=ds_demo_cls ;;
  *) echo "demo.sh: unknown task '$TASK' (use sft or classification)" >&2; exit 1 ;;
esac
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export VERIFILY_DATASETS_DIR=${VERIFILY_DATASETS_DIR:-.verifily/demo/datasets}
PY=.venv/bin/python
V=.venv/bin/verifily
DATA=.verifily/demo/data/$TASK
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Build the demo base model (cached) and the dataset files ($TASK)"
$PY examples/demo/demo.py prepare --dir .verifily/demo --task "$TASK" \
  --store "$VERIFILY_DATASETS_DIR" --dataset-id "$DS"

step "Create dataset versions $DS@v1 and $DS@v2 (immutable, hashed)"
for v in v1 v2; do
  if ! $V dataset show "$DS@$v" >/dev/null 2>&1; then
    $V dataset create --id "$DS" --version $v --task "$TASK" --from-dir "$DATA/$v" --test "$DATA/test.jsonl"
  fi
done
$V dataset diff "$DS@v1" "$DS@v2"

step "Three training rows of $DS@v1, one per source (the tags travel with each row)"
head -n 3 "$VERIFILY_DATASETS_DIR/$DS/v1/train.jsonl"

run_path() { $PY -c 'import json,sys; print(json.load(sys.stdin)["artifact_path"])'; }
step "Train a LoRA run on each version"
CONFIG=examples/demo/$TASK.yaml
RUN1=$($V train --config "$CONFIG" --dataset "$DS@v1" --name "demo_${TASK}_v1" eval.enabled=false --format json | run_path)
RUN2=$($V train --config "$CONFIG" --dataset "$DS@v2" --name "demo_${TASK}_v2" eval.enabled=false --format json | run_path)

step "Evaluate each run, sliced by source"
$V eval --run "$RUN1" --slice-by source
$V eval --run "$RUN2" --slice-by source

step "Compare v1 -> v2 per source (f1: token_f1 for SFT, macro_f1 for classification)"
$V compare --runs "$RUN1,$RUN2" --metric f1 --slice-by source
$V compare --runs "$RUN1,$RUN2" --metric f1 --slice-by source --format json \
  --output ".verifily/demo/compare-$TASK.json" >/dev/null

step "The hardest examples of the v1 run"
$PY examples/demo/demo.py hard --run "$RUN1" -n 5

step "Verify the v1 run's hash chain"
$V reproduce --run "$RUN1" --verify-only
