#!/usr/bin/env bash
# Issue 15's acceptance on a stand-in depth prior (GPU; scenes from scripts/prepare_gpu_data.sh):
# per scene, a model trained on the non-test views from their own train-only SfM, its depth
# rendered for the 3 training views, corrupted and aligned for corruption seeds 0 1 2
# (bench/alignment_corruption.py), then 3-view training from the SfM points against the
# aligned cloud of seed 0, 3 seeds (bench/sparse_quality.py).
#
#   bash bench/alignment_standin.sh [RESULTS_DIR]
#
# DATA (data_local/standin) holds fern and dtu_scan24, each with colmap_3views and the
# stand-in's colmap_17views (fern) or colmap_9views (scan24); ITERS (7000) trains the
# stand-in, SQ_ITERS (10000) the 3-view runs, JOBS (6) of them at once.
set -uo pipefail
RES=${1:-output/alignment_standin}
DATA=${DATA:-data_local/standin}
mkdir -p "$RES"
for sc in "fern llff 17 20" "dtu_scan24 dtu 9 10"; do
  set -- $sc  # scene, protocol, stand-in views, SfM keypoints a warped segment needs
  s=$DATA/$1 m=output/standin/$1
  python3 train.py -s "$s" -m "$m" --eval --n_views "$3" --split_protocol "$2" --init sfm \
    --iterations "${ITERS:-7000}" --test_iterations "${ITERS:-7000}" \
    --save_iterations "${ITERS:-7000}" --quiet > "$RES/standin_$1.log" 2>&1
  grep -h "Evaluating test\|\[train\]" "$RES/standin_$1.log"
  python3 bench/render_depth_maps.py -m "$m" -s "$s" --n_views 3 --split_protocol "$2" \
    -o "$m/depth" > "$RES/depth_$1.log" 2>&1
  for seed in 0 1 2; do
    python3 bench/alignment_corruption.py -s "$s" --n_views 3 --split_protocol "$2" \
      --depth_dir "$m/depth" --out "output/acorr/$1_s$seed" --seed $seed --min_sfm "$4" \
      > "$RES/acorr_$1_s$seed.log" 2>&1
    grep -A6 "^| prior / step" "$RES/acorr_$1_s$seed.log"
  done
  rm -rf "$s/alignment" && cp -r "output/acorr/$1_s0/alignment_2" "$s/alignment"
done
python3 bench/sparse_quality.py --data "$DATA" --scenes fern dtu_scan24 \
  --variants vanilla_sfm aligned=--init,aligned --iterations "${SQ_ITERS:-10000}" \
  --jobs "${JOBS:-6}" --results "$RES/RESULTS_aligned.md" --json "$RES/aligned.json" \
  --out output/aligned > "$RES/aligned.log" 2>&1
tail -8 "$RES/RESULTS_aligned.md"
