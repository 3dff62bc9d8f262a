#!/usr/bin/env bash
# One batched GPU session (device time is short): run the named steps in order, each
# logging to $OUT/<step>.log, and keep going when one fails.
#
#   bash scripts/gpu_session.sh tests profile speed demo roi cache
#
# Steps:
#   tests    pytest -m gpu (the GPU half of the suite; TEST_ARGS: files or -k filters)
#   lpdr     bench/lpdr.py: LPDR loss cost against L1 + SSIM
#   fern_priors  depth priors for data_local/fern_priors (which has GrabCut pure_masks/ and
#            COLMAP intrinsics in depth_intrinsics/0, outside the reader's sparse/), from a
#            RANDOM-INIT Depth Pro: for timing the prior-based losses only
#   profile  bench/profile_step.py on lego late in training, direct stages vs gsplat API
#   profile_fern, profile_fern_priors  bench/profile_step.py --phases (PROFILE_ARGS: more
#            flags, e.g. --compare_graphs or --compare_autograd) on fern 3-view late
#            in training: plain 3DGS, and with every prior-based loss (after fern_priors)
#   speed    bench/train_speed.py (SPEED_ARGS, default: lego and fern, fast loop)
#   startup  import times of train.py and gsplat, CUDA context creation
#   demo     scripts/demo.py --backend gsplat, timed
#   roi      scripts/run_maryrose_roi.py (issue 5 acceptance; data in $SEGSPLAT_DATA)
#   sparse   bench/sparse_quality.py on data_local (fern, dtu_scan24; SPARSE_ARGS: more flags,
#            e.g. --jobs 4 --seeds 0): table to $OUT/RESULTS_sparse.md, numbers to
#            $OUT/sparse_quality.json, models in output/sparse_quality
#   regseg   issue 14's acceptance: bench/sparse_quality.py on fern and dtu_scan24 (under
#            REGSEG_DATA, default data_local; each needs mask_matching/), RegSegField's
#            regularisation on the SfM points, random points and the preset, each against
#            its base (REGSEG_ARGS: e.g. --jobs 7 --seeds 0 1 2; --jobs 1 for timings;
#            REGSEG_VARIANTS: e.g. "preset preset_maskvis preset_regseg", the mask-visibility
#            loss alone and everything; data: REGSEG_DATA=data_local/regseg from
#            scripts/prepare_gpu_data.sh)
#   profile_regseg  bench/profile_step.py --phases on scan24 (REGSEG_DATA) at iteration 3000,
#            inside every window of RegSegField's terms: the preset with them (REGSEG_FLAGS),
#            then the preset alone with and without CUDA graphs: where the 8.8x goes
#   field_speed  bench/feature_field_speed.py: a feature-field step part by part (864x864;
#            FIELD_ARGS: e.g. "--n 65000 --size 384 --codes 40", DTU scan24's size)
#   maryrose run_scene.sh on data_local/maryrose_gpu (12 views; colmap_12views made on the
#            CPU, the GPU machine has no pycolmap), alone on the GPU: issue 17's < 3 min;
#            MARYROSE_ARGS: segment.py flags, e.g. "--k 2 --eval" (issue 16's scores)
#   pose_opt the preset on data_local/slim/dtu_scan24 (3 views), then render.py
#            --test_pose_opt 500 on its 25 test views, timed alone: issue 15's < 30 s
#   preset_time  issue 13's time per scene: bench/preset_time.sh (the stereo process, then
#            train.py --sparse_view, each alone, on data_local/slim's fern and dtu_scan24)
#   seg_speed  bench/segmentation_speed.py (KMeans, region growing, distillation)
#   standin  issue 15: bench/alignment_standin.sh (stand-in prior, corruption, alignment,
#            SfM points against the aligned cloud; carry data_local/standin)
#   fill     issue 13: the preset from the stereo cloud against the stereo cloud with the
#            segment-planar fill, DTU scan24 and fern, 3 views, 3 seeds, 10k iterations,
#            JOBS (6) trainings sharing the GPU (bench/quality_probe.sh; data from
#            scripts/prepare_gpu_data.sh: carry data_local/slim and data_local/fill)
#   binocular  issue 13: the preset against variants of it, DTU scan24 and fern, 3 views,
#            3 seeds, 10k iterations, JOBS (9) sharing the GPU (carry data_local/slim);
#            BINO_VARIANTS (default "preset preset_s16"): preset_s16 is session 16's preset
#            (no densification, no decay); preset_nodecay densifies without the decay;
#            preset_decay10k densifies and decays until 10k; preset_int200 densifies every
#            200 iterations; preset_x shifts along x only, as published; preset_shift60
#            shifts further; also preset_every3, preset_lam1, preset_drop10, preset_nobino.
#            BINO_SCENES (default "slim/dtu_scan24:dtu slim/fern:llff")
#   cache    save the compiled CUDA extensions to $OUT (copy into .gpu/ext_cache/)
# Data: data_local/{lego,fern,nerd_maryrose} carried with the run (see docs/RESULTS.md).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
. scripts/gpu_env.sh
. scripts/gpu_cache.sh
export SEGSPLAT_DATA=${SEGSPLAT_DATA:-data_local}
# fern as bench/train_speed.py trains it, and the prior-based losses of its `priors` variant.
FERN_ARGS="-s data_local/fern --n_views 3 --split_protocol llff"
PRIOR_FLAGS="--use_mask --use_lpdr --lambda_depth_ssi 0.1 --lambda_depth_pearson 0.05 \
  --roi_loss_focus_after 5000"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/extensions.log"
import time
t = time.time()
import torch
from gsplat.cuda._backend import _C  # compiles on a fresh machine without the cache
print(f"gsplat extension ready in {time.time() - t:.1f} s on {torch.cuda.get_device_name()}")
t = time.time()
from utils.loss_utils import load_fused_ssim
assert load_fused_ssim(torch.device("cuda")) is not None
print(f"fused SSIM extension ready in {time.time() - t:.1f} s")
PY
for step in "$@"; do
  start=$(date +%s)
  case $step in
    tests) python3 -m pytest -m gpu -q -rs ${TEST_ARGS:-} ;;
    lpdr) python3 bench/lpdr.py ;;
    fern_priors) [ -d data_local/fern_priors/depth_pro ] || python3 predepth.py \
      -s data_local/fern_priors -i images_8 --random_init_weights --sparse depth_intrinsics/0 ;;
    profile) python3 bench/profile_step.py -s data_local/lego -w --eval --warmup 5000 \
      --steps 50 --compare_api ;;
    profile_fern) python3 bench/profile_step.py $FERN_ARGS --warmup 8000 --steps 100 --phases \
      ${PROFILE_ARGS:-} ;;
    profile_fern_priors) python3 bench/profile_step.py -s data_local/fern_priors \
      --n_views 3 --split_protocol llff $PRIOR_FLAGS --warmup 8000 --steps 100 --phases ;;
    speed) python3 bench/train_speed.py --data data_local --results "$OUT/RESULTS_speed.md" \
      --log "$OUT/speed_train.log" ${SPEED_ARGS:---scenes lego fern --variants fast} ;;
    startup) python3 -X importtime -c "import train, gsplat" 2> "$OUT/importtime.log"
      sort -t'|' -k2 -n "$OUT/importtime.log" | tail -12
      python3 -c "import time; t = time.time(); import torch; torch.zeros(1, device='cuda')
print(f'import torch + CUDA context: {time.time() - t:.2f} s')" ;;
    demo) python3 scripts/demo.py --backend gsplat -o "$OUT/demo_run" ;;
    roi) python3 scripts/run_maryrose_roi.py --results "$OUT/RESULTS_roi.md" ${ROI_ARGS:-} ;;
    sparse) python3 bench/sparse_quality.py --data data_local --results "$OUT/RESULTS_sparse.md" \
      --json "$OUT/sparse_quality.json" ${SPARSE_ARGS:-} ;;
    regseg) python3 bench/sparse_quality.py --data ${REGSEG_DATA:-data_local} \
      --scenes fern dtu_scan24 --variants ${REGSEG_VARIANTS:-vanilla_sfm regseg vanilla_random \
      regseg_random preset preset_regseg} --results "$OUT/RESULTS_regseg.md" --json "$OUT/regseg.json" \
      --out output/regseg ${REGSEG_ARGS:-} ;;
    field_speed) python3 bench/feature_field_speed.py ${FIELD_ARGS:-} ;;
    profile_regseg) B="-s ${REGSEG_DATA:-data_local}/dtu_scan24 --eval --n_views 3 --split_protocol dtu \
        --sparse_view --warmup 3000 --steps 100 --phases --rows 30"
      python3 bench/profile_step.py $B $(python3 -c "from scripts.sparse_benchmark import \
REGSEG_FLAGS; print(' '.join(REGSEG_FLAGS))")
      python3 bench/profile_step.py $B --compare_graphs --rows 10 ;;
    maryrose) time bash scripts/run_scene.sh data_local/maryrose_gpu -m output/maryrose \
      --n_views 12 --split_protocol llff --iterations 10000 --done colmap_views \
      ${MARYROSE_ARGS:+--segment_args "$MARYROSE_ARGS"}
      tar czf "$OUT/maryrose_runscene.tgz" -C output maryrose/logs maryrose/results.json \
        maryrose/segments/segmentation.json ;;
    preset_time) bash bench/preset_time.sh data_local/slim cuda | tee "$OUT/preset_time.md" ;;
    pose_opt) python3 train.py -s data_local/slim/dtu_scan24 -m output/dtu_preset --eval \
      --n_views 3 --split_protocol dtu --sparse_view --iterations 10000 --test_iterations 10000 \
      --save_iterations 10000 --quiet
      time python3 render.py -m output/dtu_preset --skip_train --test_pose_opt 500 ;;
    seg_speed) python3 bench/segmentation_speed.py ;;
    standin) bash bench/alignment_standin.sh "$OUT/standin" ;;
    fill) RUNS=$(for sc in "slim/dtu_scan24 dtu" "fill/dtu_scan24 dtu" "slim/fern llff" \
        "fill/fern llff"; do for seed in 0 1 2; do echo "$sc preset $seed --sparse_view"; done
        done) JOBS=${JOBS:-6} RES=$OUT/probe_fill.txt bash bench/quality_probe.sh
      sort "$OUT/probe_fill.txt" ;;
    binocular) declare -A FLAGS=([preset]=--sparse_view
        [preset_every3]=--sparse_view,--binocular_every,3
        [preset_shift60]=--sparse_view,--binocular_shift,0.6
        [preset_x]=--sparse_view,--binocular_axes,x
        [preset_lam1]=--sparse_view,--lambda_binocular,1.0
        [preset_drop10]=--sparse_view,--drop_rate,0.1
        [preset_nobino]=--sparse_view,--lambda_binocular,0
        [preset_s16]=--sparse_view,--densify_until_iter,0,--opacity_decay,1
        [preset_nodecay]=--sparse_view,--opacity_decay,1
        [preset_decay10k]=--sparse_view,--densify_until_iter,10000
        [preset_int200]=--sparse_view,--densification_interval,200)
      RUNS=$(for sc in ${BINO_SCENES:-slim/dtu_scan24:dtu slim/fern:llff}; do for seed in 0 1 2; do
        for v in ${BINO_VARIANTS:-preset preset_s16}; do
          echo "${sc/:/ } $v $seed ${FLAGS[$v]}"; done; done; done) \
        JOBS=${JOBS:-9} RES=$OUT/probe_binocular.txt bash bench/quality_probe.sh
      sort "$OUT/probe_binocular.txt" ;;
    cache) GPU_CACHE_MODE=save OUTDIR=$OUT . scripts/gpu_cache.sh ;;
    *) echo "unknown step $step" ;;
  esac > "$OUT/$step.log" 2>&1
  echo "== $step: exit $? in $(( $(date +%s) - start )) s"; tail -n 25 "$OUT/$step.log"
done
