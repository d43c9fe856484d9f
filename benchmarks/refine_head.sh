#!/usr/bin/env bash
# Give the shipped model its click refinement head: train the head alone (encoder and decoders
# frozen, so the automatic segmentation stays bit-identical) on the us-universal train split,
# pack it as fp16, benchmark clicks (benchmarks/results/clicks.json + .md) and install it into
# src/propl/weights/universal/ only if the automatic segmentation is bit-identical to the
# shipped model's and the weights stay <= 15 MB.
#   benchmarks/refine_head.sh [DATA] [NEW]   (2-core CPU: ~4 min encoding + ~0.4-3 s per step,
#   900 steps, as the machine is shared; the benchmark ~0.5 s per scan and start)
# REFINE_STEPS=N trains N steps; CLICKS_LIMIT=N benchmarks the first N test scans per set.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PROPL_DATA:-../shared/datasets/us-universal}}
new=${2:-../shared/datasets/us-new-task-dev}
run=runs/refine
steps=${REFINE_STEPS:-900}
make -s env
mkdir -p "$run"
rm -rf "$run/base" && cp -r src/propl/weights/universal "$run/base"  # the model as shipped now
nice -n 5 .venv/bin/propl train-refine --data "$data" --model "$run/base" --out "$run/head" \
  --steps "$steps" --seed 0 --cache .cache/arrays
.venv/bin/propl pack "$run/head" --out "$run/packed" --version universal-192-s0
nice -n 5 .venv/bin/python benchmarks/clicks.py --data "$data" --new-task "$new" \
  --model "$run/packed" --baseline "$run/base" ${CLICKS_LIMIT:+--limit "$CLICKS_LIMIT"}
.venv/bin/python - "$run/packed" <<'PY'
import json, sys
from pathlib import Path
doc = json.loads(Path("benchmarks/results/clicks.json").read_text())
size = (Path(sys.argv[1]) / "model.safetensors").stat().st_size
if not doc.get("auto_identical") or size > 15e6:
    sys.exit(f"not installed: auto_identical={doc.get('auto_identical')}, {size / 1e6:.1f} MB")
PY
cp "$run/packed/model.safetensors" "$run/packed/model.json" src/propl/weights/universal/
echo "installed the refinement head into src/propl/weights/universal/"
