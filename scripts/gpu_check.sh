#!/usr/bin/env bash
# Run the GPU half of the test suite (and optional extra commands) on a CUDA machine that
# has no package registry: install the carried wheels, build gsplat on first use, run the
# tests marked `gpu`, write logs under $OUT (or ./gpu_out).
#
# Usage (repo root): bash scripts/gpu_check.sh [pytest args...]
# The wheels come from: bash ../shared/gpu/wheels.sh .whl   (run where pip works)
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/gsplat_build.log"
import time, torch
t = time.time()
import gsplat
from gsplat.cuda._backend import _C  # triggers the JIT build on a fresh machine
print(f"gsplat {gsplat.__version__} ready in {time.time() - t:.1f} s on {torch.cuda.get_device_name()}")
PY
python3 -m pytest -m gpu -q -rs "$@" 2>&1 | tee "$OUT/pytest_gpu.log"
