#!/usr/bin/env bash
# Train the universal model for the five us-universal tasks (full supervision, 192², 3,000
# steps, seed 0), pack it as fp16 safetensors and ship it if it beats the packaged model on the
# test split.   benchmarks/shipped_model.sh [DATA]      (~1 h on a 2-core CPU; resumable)
# Writes runs/shipped/ (git-ignored), benchmarks/results/shipped-model.json and .md, and (when
# better) src/propl/weights/universal/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PROPL_DATA:-../shared/datasets/us-universal}}
make -s env
resume=()
[[ -f runs/shipped/last/model.json ]] && resume=(--resume)
.venv/bin/propl train --data "$data" --method full --size 192 --steps 3000 --batch-size 8 \
  --eval-every 250 --seed 0 --cache .cache/arrays --out runs/shipped "${resume[@]}"
.venv/bin/propl pack runs/shipped/best --out runs/shipped/packed --version universal-192-s0
.venv/bin/python benchmarks/shipped_model.py --data "$data" --candidate runs/shipped/packed --install
.venv/bin/propl benchmark report README.md
