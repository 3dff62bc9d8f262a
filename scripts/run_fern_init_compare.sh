#!/usr/bin/env bash
# LLFF fern, 3 training views: Gaussians initialised from the train-only COLMAP points
# (colmap_3views/sparse/0) versus random points, everything else identical. Runs on the GPU
# machine once train.py, render.py and metrics.py exist; writes the table into
# docs/RESULTS.md (section "Fern 3-view: train-only COLMAP points vs random init").
#
#   bash scripts/run_fern_init_compare.sh                     # defaults below
#   SRC=/path/llff/fern ITERS=10000 bash scripts/run_fern_init_compare.sh
#
# Settings: LLFF protocol (test = every 8th image, 3 training views by linspace), images at
# 1/8 resolution (504x378, so -r 1 on the converted scene), --eval, ITERS iterations, the
# same seed for both runs; random init draws RANDOM_POINTS points (train.py --random_init).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
SRC=${SRC:-../shared/data/llff_fern}
SCENE=${SCENE:-data_local/fern}
OUT=${OUT:-output/fern_init_compare}
ITERS=${ITERS:-6000}
RANDOM_POINTS=${RANDOM_POINTS:-10000}
EXTRA=${EXTRA:-}

if [ ! -d "$SCENE/sparse/0" ]; then
  $PY scripts/prepare_llff.py --src "$SRC" --out "$SCENE" --factor 8 --n_views 3
fi
if [ ! -d "$SCENE/colmap_3views/sparse/0" ]; then
  $PY colmap_match.py -s "$SCENE" --n_views 3 --split_protocol llff
fi

common=(-s "$SCENE" --eval --n_views 3 --split_protocol llff -r 1 --iterations "$ITERS"
        --test_iterations "$ITERS" --save_iterations "$ITERS" --quiet)
# shellcheck disable=SC2086
$PY train.py "${common[@]}" -m "$OUT/colmap_init" $EXTRA
# shellcheck disable=SC2086
$PY train.py "${common[@]}" -m "$OUT/random_init" --random_init "$RANDOM_POINTS" $EXTRA
for run in colmap_init random_init; do
  $PY render.py -m "$OUT/$run" --skip_train
  $PY metrics.py -m "$OUT/$run"
done
$PY scripts/init_compare_table.py --runs "$OUT/colmap_init" "$OUT/random_init" \
  --labels "train-only COLMAP points" "random ($RANDOM_POINTS points)" \
  --scene "$SCENE" --n_views 3 --iterations "$ITERS" --results docs/RESULTS.md \
  --title "Fern 3-view: train-only COLMAP points vs random init"
