#!/usr/bin/env bash
# Quick sparse-view quality probe: train.py's own test PSNR at every --test_iterations
# (the curve over training, not only the end), K runs sharing one GPU. For screening
# variants; bench/sparse_quality.py is the full benchmark (render.py + metrics.py, tables).
#
#   RUNS="fern llff dense 0 --init,dense
#   dtu_scan24 dtu dense 0 --init,dense" JOBS=7 bash bench/quality_probe.sh
#
# RUNS: one run per line, "scene protocol variant seed flags" (flags comma-separated);
# scenes are folders under $DATA (default data_local), prepared as for sparse_quality.py.
# Each run trains output/probe/<scene>/<variant>/s<seed> for $ITERS iterations (10000) with
# 3 views and appends one line to $RES (default output/probe/probe.txt):
#   <scene> <variant> s<seed> <iteration>]:<test PSNR> ... [train] <loop time, Gaussians>
set -uo pipefail
export ITERS=${ITERS:-10000} TESTS=${TESTS:-"2000 4000 6000 8000 10000"}
export RES=${RES:-output/probe/probe.txt} DATA=${DATA:-data_local} N_VIEWS=${N_VIEWS:-3}
JOBS=${JOBS:-6}
mkdir -p "$(dirname "$RES")"
run() { # scene protocol variant seed flags...
  local s=$1 p=$2 v=$3 seed=$4; shift 4
  local m=output/probe/$s/$v/s$seed
  mkdir -p "$m"
  python3 train.py -s "$DATA/$s" -m "$m" --eval --n_views "$N_VIEWS" --split_protocol "$p" \
    --iterations "$ITERS" --test_iterations $TESTS --save_iterations "$ITERS" --seed "$seed" \
    --quiet "$@" > "$m.log" 2>&1
  echo "$s $v s$seed $(grep -o 'ITER [0-9]*\] Evaluating test: L1 [0-9.e-]* PSNR [0-9.]*' "$m.log" |
    awk '{printf "%s:%s ", $2, $NF}') $(grep -o '\[train\].*' "$m.log") $(grep -m1 -o 'rror.*' "$m.log")" |
    tee -a "$RES"
}
export -f run
while read -r s p v seed flags; do
  [ -n "$s" ] && echo "$s $p $v $seed ${flags//,/ }"
done <<< "$RUNS" | xargs -P "$JOBS" -L 1 bash -c 'run $0 $1 $2 $3 ${@:4}'
