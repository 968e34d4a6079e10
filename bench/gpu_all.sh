#!/usr/bin/env bash
# On a CUDA machine: the GPU tests, then bench/gpu_flux.py for every memory tier at 512² and 1024²
# (and the 24 GB tier with torch.compile), logs and JSON into one folder for docs/benchmarks.md.
#   bash bench/gpu_all.sh [OUT_DIR]        (PYTHON=... to use another interpreter than .venv's)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
status=0
"$py" - <<'PY' | tee "$out/device.txt"
import platform, torch
print(f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA'}; torch {torch.__version__}; "
      f"python {platform.python_version()}")
PY
"$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log" || status=1
"$py" bench/gpu_flux.py --tiers 24gb,16gb,12gb,8gb --resolutions 512,1024 --steps 10 \
  --json "$out/gpu_flux.json" 2>&1 | tee "$out/gpu_flux.log" || status=1
"$py" bench/gpu_flux.py --tiers 24gb --resolutions 1024 --steps 10 --compile \
  --json "$out/gpu_flux_compile.json" 2>&1 | tee "$out/gpu_flux_compile.log" || status=1
exit $status
