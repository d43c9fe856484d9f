#!/usr/bin/env bash
# Train a second universal model like the shipped one (benchmarks/shipped_model.sh) from seed 1
# (~20 min on a 2-core CPU; resumable), then score how its disagreement with the shipped model
# ranks the test scans.
#   benchmarks/second_model.sh [DATA]
# Writes runs/second-model/ (git-ignored), benchmarks/results/second-model.json and .md.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PROPL_DATA:-../shared/datasets/us-universal}}
make -s env
if [[ ! -f runs/second-model/done ]]; then
  resume=()
  [[ -f runs/second-model/last/model.json ]] && resume=(--resume)
  .venv/bin/propl train --data "$data" --method full --size 192 --steps 3000 --batch-size 8 \
    --eval-every 500 --seed 1 --cache .cache/arrays --out runs/second-model "${resume[@]}"
  touch runs/second-model/done
fi
.venv/bin/python benchmarks/second_model.py --data "$data" --second runs/second-model/best
