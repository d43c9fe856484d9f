#!/usr/bin/env bash
# The retraining stall benchmark on two commits, alternating, in one session (benchmarks/ab.sh).
#
#   bash benchmarks/retrain_stall_ab.sh DATA OLD_COMMIT [NEW_COMMIT=HEAD] [REPEATS=2]
#
# Each commit runs its own benchmarks/retrain_stall.py under Xvfb with this checkout's .venv.
# Writes benchmarks/results/retrain-stall-ab/{old,new}-<commit>-<i>.json and .md.
set -euo pipefail
data=$(realpath "${1:?usage: retrain_stall_ab.sh DATA OLD_COMMIT [NEW_COMMIT] [REPEATS]}")
exec bash "$(dirname "$0")/ab.sh" retrain-stall-ab "${2:?old commit}" "${3:-HEAD}" "${4:-2}" \
  "xvfb-run -a -s '-screen 0 1600x1000x24' \$PY benchmarks/retrain_stall.py --data '$data' \
  --out \$AB_OUT.json"
