#!/usr/bin/env bash
# DTU sparse-view benchmark: the 15 pixelNeRF test scans (8 21 30 31 34 38 40 41 45 55 63 82
# 103 110 114) found under DATA_ROOT, as scan<ID>/ in the IDR/MonoSDF layout (cameras.npz +
# image/ or rgb/, mask/) or the DTU release (Rectified/, Calibration/cal18/; object masks
# from DTU_MASKS or DATA_ROOT/idrmasks), prepared at 400x300, COLMAP train-only points, MVS,
# then the configs x seeds (DTU protocol split), one run per GPU.
#
#   scripts/run_dtu.sh DATA_ROOT [OUT_ROOT] [--gpus 0,1] [--dry_run] [--overwrite]
#   N_VIEWS=3 ITERS=10000 SEEDS="0 1 2" CONFIGS="vanilla preset" scripts/run_dtu.sh ...
#
# The table goes to OUT_ROOT/dtu_results.md (and is printed); everything else is in
# scripts/sparse_benchmark.py (python3 scripts/sparse_benchmark.py --help).
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0" >&2
  exit 1
fi
exec "${PY:-python3}" "$(dirname "$0")/sparse_benchmark.py" dtu "$@"
