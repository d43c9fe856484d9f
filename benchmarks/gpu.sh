#!/usr/bin/env bash
# Every GPU check in one prepared run (~2.5 min on an H200), for a lent GPU machine (the device tool):
#   1. here:  bash benchmarks/gpu_wheels.sh
#   2. there: device run, command 'bash benchmarks/gpu.sh', carry ['.whl'], timeout_s 540
# It runs the CUDA tests (tests/gpu: inference, bf16 training of every method, checkpoints,
# torchrun with NCCL) and benchmarks/gpu_throughput.py; logs and gpu-throughput.json|.md go to
# $OUT (or gpu-out/ when run by hand). Commit them as benchmarks/results/gpu-throughput.json|.md
# and tests-gpu.log as benchmarks/results/gpu-tests.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
  2>&1 | tee "$out/gpu.txt"
rc=0
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$out/tests-gpu.log" || rc=1
timeout 200 python3 benchmarks/gpu_throughput.py --out "$out/gpu-throughput.json" 2>&1 \
  | tee "$out/throughput.log" || rc=1
exit $rc
