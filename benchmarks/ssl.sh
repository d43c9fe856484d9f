#!/usr/bin/env bash
# The semi-supervised table: every method at 1/16 and 1/8 labels plus full supervision, one seed.
#   benchmarks/ssl.sh [quick|full] [DATA] [propl benchmark ssl options...]
#   (quick: ~1 h on a 2-core CPU; full: for a GPU). More seeds of some methods, e.g.
#   benchmarks/ssl.sh quick DATA --methods supervised propl unimatch --labelled 1/16 --seed 1
# Writes benchmarks/results/ssl-<profile>.json and .md; completed runs are skipped on re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-quick}
data=${2:-${PROPL_DATA:-../shared/datasets/us-universal}}
make -s env
exec .venv/bin/propl benchmark ssl --data "$data" --profile "$profile" --cache .cache/arrays "${@:3}"
