#!/usr/bin/env bash
# Issue 13's time per scene: the stereo stage's whole process (python -m mvs), then
# train.py --sparse_view (10k iterations, 3 views; ITERS to change), each alone on the
# machine, per scene.
# Prints a markdown table (process wall-clock seconds; train.py's own loop time).
#
#   bash bench/preset_time.sh [DATA (default data_local/slim)] [DEVICE (default cuda)]
#
# The scenes are DATA/fern (LLFF protocol) and DATA/dtu_scan24 (DTU protocol), prepared by
# scripts/prepare_gpu_data.sh; the stereo cloud is rebuilt (--overwrite) in each. Models go
# to output/preset_time/<scene>, logs beside them.
set -uo pipefail
DATA=${1:-data_local/slim}
DEVICE=${2:-cuda}
ITERS=${ITERS:-10000}  # fewer only to try the script out
PRESET_FLAGS=${PRESET_FLAGS:-}  # flags added after --sparse_view, e.g. a variant of it
OUTDIR=output/preset_time
mkdir -p "$OUTDIR"
TIMEFORMAT=%R
echo "| scene | stereo process s | train.py s | stereo + train.py s | loop s | test PSNR |"
echo "|---|---|---|---|---|---|"
for scene_protocol in "fern llff" "dtu_scan24 dtu"; do
  set -- $scene_protocol
  scene=$DATA/$1
  if [ ! -d "$scene" ]; then echo "skipping $1: no $scene" >&2; continue; fi
  t_mvs=$( { time python3 -m mvs -s "$scene" --n_views 3 --split_protocol "$2" \
    --device "$DEVICE" --overwrite --quiet > "$OUTDIR/$1_mvs.log" 2>&1; } 2>&1 )
  t_train=$( { time python3 train.py -s "$scene" -m "$OUTDIR/$1" --eval --n_views 3 \
    --split_protocol "$2" --iterations "$ITERS" --test_iterations "$ITERS" \
    --save_iterations "$ITERS" --seed 0 --quiet --sparse_view $PRESET_FLAGS \
    > "$OUTDIR/$1_train.log" 2>&1; } 2>&1 )
  loop=$(grep -o 'iterations in [0-9.]* s' "$OUTDIR/$1_train.log" | awk '{print $3}')
  psnr=$(grep -o 'Evaluating test: L1 [0-9.e-]* PSNR [0-9.]*' "$OUTDIR/$1_train.log" |
    awk '{print $NF}')
  total=$(python3 -c "print(f'{$t_mvs + $t_train:.1f}')")
  echo "| $1 | $t_mvs | $t_train | $total | $loop | ${psnr:0:5} |"
done
