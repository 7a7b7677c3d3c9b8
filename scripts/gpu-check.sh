#!/usr/bin/env bash
# Run ON a lent GPU machine, through the device tool, after scripts/gpu-wheels.sh has filled .whl/ here:
#   run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=590)
# It installs the carried wheels beside the machine's own torch (no network there), then runs the `gpu`
# tests and `python -m meddx bench --device cuda` (each architecture on the GPU, then on the CPU), and leaves
# the logs and the table's numbers in $OUT. FAMILIES picks architectures (default: all three).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/meddx-gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || { echo "gpu-check: the carried wheels did not install"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_device_gpu.py 2>&1 \
  | tee "$out/gpu-tests.txt"
timeout 330 python3 -m meddx bench --device cuda --families "${FAMILIES:-biomedclip,medsiglip-448,whyxrayclip}" \
  --threads "$(nproc)" --repeats 5 --json "$out/bench-device.json" 2>&1 | tee "$out/bench-device.txt"
