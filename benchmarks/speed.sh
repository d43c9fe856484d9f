#!/usr/bin/env bash
# CPU speed and peak memory of ProPL vs the plain U-Net reference, alternating, medians and ratios.
#   benchmarks/speed.sh            (~3 min; run it on an otherwise idle machine)
# Writes benchmarks/results/speed.json and .md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s env
exec .venv/bin/propl benchmark speed --repeats 15 --device cpu
