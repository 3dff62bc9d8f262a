#!/usr/bin/env bash
# LLFF sparse-view benchmark: every scene of fern flower fortress horns leaves orchids room
# trex found under DATA_ROOT (LLFF folders: poses_bounds.npy + images*/), prepared at 1/8
# resolution, COLMAP train-only points, MVS, then the configs x seeds, one run per GPU.
#
#   scripts/run_llff.sh DATA_ROOT [OUT_ROOT] [--gpus 0,1] [--dry_run] [--overwrite]
#   N_VIEWS=3 ITERS=10000 SEEDS="0 1 2" CONFIGS="vanilla preset drop=--drop_rate,0.1" \
#     scripts/run_llff.sh ../shared/data/nerf_llff_data output/sparse_benchmark
#
# The table goes to OUT_ROOT/llff_results.md (and is printed); everything else is in
# scripts/sparse_benchmark.py (python3 scripts/sparse_benchmark.py --help).
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,11p' "$0" >&2
  exit 1
fi
exec "${PY:-python3}" "$(dirname "$0")/sparse_benchmark.py" llff "$@"
