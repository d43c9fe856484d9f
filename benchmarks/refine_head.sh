#!/usr/bin/env bash
# Give the shipped model its click refinement head: train the head alone (encoder and decoders
# frozen, so the automatic segmentation stays bit-identical) on the us-universal train split,
# pack it as fp16, benchmark clicks (runs/refine/clicks.json + .md) and install it into
# src/propl/weights/universal/, with its results into benchmarks/results/clicks.*, only if the
# automatic segmentation is bit-identical to the shipped model's, the weights stay <= 15 MB
# and the clicks are no worse than the committed results' (NoC@90 from the pseudo-label and
# from a rough outline, NoC@85 from an empty mask, means over the five tasks).
#   benchmarks/refine_head.sh [DATA] [NEW]   (2-core CPU: ~1 min encoding + ~0.2 s per step
#   alone, more on a shared machine; the benchmark ~8 min; run it alone: it times the clicks)
# REFINE_STEPS=N trains N steps (default 6000), REFINE_BOX_RATE=F boxes that share of the
# training frames (default 0.25), REFINE_GENERIC_RATE=F gives that share of the frames a region
# of the frame itself as the object, with no task (default: the trainer's, 0.2),
# REFINE_GENERIC_PRIOR=F starts that share of those from a rough mask of the region instead of
# an empty one (default: the trainer's),
# REFINE_MAX_ROUNDS=N lets the head run up to N click rounds on its own output before the round
# it learns from (default: the trainer's, 6), REFINE_ZOOMED_VIEWS=0 trains on whole frames only
# (default: also each frame cut to the window the refiner zooms into from the second click);
# CLICKS_LIMIT=N benchmarks the first N test scans per set (the committed results: every test
# scan).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PROPL_DATA:-../shared/datasets/us-universal}}
new=${2:-../shared/datasets/us-new-task-dev}
run=runs/refine
steps=${REFINE_STEPS:-6000}
box_rate=${REFINE_BOX_RATE:-0.25}
generic_rate=${REFINE_GENERIC_RATE:-}
generic_prior=${REFINE_GENERIC_PRIOR:-}
max_rounds=${REFINE_MAX_ROUNDS:-}
views=(--zoomed-views)
[[ "${REFINE_ZOOMED_VIEWS:-1}" == 0 ]] && views=(--no-zoomed-views)
make -s env
mkdir -p "$run"
rm -rf "$run/base" && cp -r src/propl/weights/universal "$run/base"  # the model as shipped now
nice -n 5 .venv/bin/propl train-refine --data "$data" --model "$run/base" --out "$run/head" \
  --steps "$steps" --box-rate "$box_rate" ${generic_rate:+--generic-rate "$generic_rate"} \
  ${generic_prior:+--generic-prior "$generic_prior"} ${max_rounds:+--max-rounds "$max_rounds"} \
  "${views[@]}" --seed 0 --cache .cache/arrays
.venv/bin/propl pack "$run/head" --out "$run/packed" --version universal-192-s0
nice -n 5 .venv/bin/python benchmarks/clicks.py --data "$data" --new-task "$new" \
  --model "$run/packed" --baseline "$run/base" ${CLICKS_LIMIT:+--limit "$CLICKS_LIMIT"} \
  --out "$run/clicks"
.venv/bin/python - "$run/packed" "$run/clicks.json" <<'PY'
import json, sys
from pathlib import Path
doc = json.loads(Path(sys.argv[2]).read_text())
old = json.loads(Path("benchmarks/results/clicks.json").read_text())
size = (Path(sys.argv[1]) / "model.safetensors").stat().st_size
if not doc.get("auto_identical") or size > 15e6:
    sys.exit(f"not installed: auto_identical={doc.get('auto_identical')}, {size / 1e6:.1f} MB")
if doc.get("limit") != old.get("limit"):
    sys.exit(f"not installed: benchmarked on limit {doc.get('limit')}, committed {old.get('limit')}")
for key in ("pseudo_noc90", "empty_noc85", "rough_noc90"):
    if old["targets"].get(key) is None:  # committed before that start was measured
        continue
    new, was = doc["targets"][key], old["targets"][key]
    print(f"{key}: {new:.2f} (committed {was:.2f})")
    if new > was:
        sys.exit(f"not installed: {key} is worse")
PY
cp "$run/packed/model.safetensors" "$run/packed/model.json" src/propl/weights/universal/
cp "$run/clicks.json" "$run/clicks.md" benchmarks/results/
echo "installed the refinement head into src/propl/weights/universal/"
