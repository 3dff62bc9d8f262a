#!/usr/bin/env bash
# GPU check of the 2D-prior stages: SAM 2 (auto masks, video propagation) and Depth Pro,
# with random-init weights built from the packages' own configs (no weights can be fetched
# on the GPU machine). Random weights make every mask and depth meaningless: this checks
# the code paths and the documented output formats, nothing about quality.
#
#   here (CPU machine, repo root, once):  bash scripts/gpu_priors_check.sh prepare
#       -> .whl/ (sam2 1.1.0, hydra-core, omegaconf, antlr4, iopath; via shared/gpu/wheels.sh)
#          .gpu/priors_data/nerd_maryrose/ (4 views + GT masks of the real scene)
#   there (device run, carry [".whl", ".gpu"]):  bash scripts/gpu_priors_check.sh run
#       -> $OUT/priors_pytest.log, $OUT/priors_cli.log, $OUT/priors_summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: gpu_priors_check.sh prepare|run}
data=.gpu/priors_data

case "$mode" in
prepare)
  shared=${SHARED:-../shared}
  bash "$shared/gpu/wheels.sh" .whl --with-sam2
  src="$shared/data/nerd_maryrose"
  rm -rf "$data" && mkdir -p "$data/nerd_maryrose/images_4" "$data/nerd_maryrose/masks_4"
  for n in IMG_9669 IMG_9680 IMG_9700 IMG_9720; do
    cp "$src/images_4/$n.jpg" "$data/nerd_maryrose/images_4/"
    cp "$src/masks_4/$n.png" "$data/nerd_maryrose/masks_4/"
  done
  du -sh .whl "$data"
  ;;
run)
  out=${OUT:-/tmp/priors_out}
  mkdir -p "$out"
  export SAM2_BUILD_CUDA=0 PYTHONUNBUFFERED=1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target /tmp/site .whl/* 2>&1 | tail -3
  export PYTHONPATH=/tmp/site:$PWD
  {
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -c "import torch, torchvision, transformers, sam2; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
  } 2>&1 | tee "$out/priors_summary.txt"

  set +e
  SEGSPLAT_DATA=$data python3 -m pytest -m gpu -v -s -p no:cacheprovider \
    tests/test_sam2_gpu.py tests/test_depth_pro_gpu.py 2>&1 | tee "$out/priors_pytest.log"
  rc_tests=${PIPESTATUS[0]}

  # The CLIs end to end on a copy of the real views, plus a COLMAP model holding the
  # scene's true focal length (poses_bounds: f = 10547.2 px at 3456 px, /4 for images_4).
  scene=/tmp/priors_scene
  rm -rf $scene && mkdir -p $scene && cp -r $data/nerd_maryrose/images_4 $scene/
  python3 - <<'EOF'
import os
import numpy as np
from scene.colmap_io import ColmapCamera, ColmapImage, write_model
names = sorted(os.listdir("/tmp/priors_scene/images_4"))
cam = ColmapCamera(1, "SIMPLE_PINHOLE", 3456, 3456, np.array([10547.2, 1728.0, 1728.0]))
ims = {i + 1: ColmapImage(i + 1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, n)
       for i, n in enumerate(names)}
write_model({1: cam}, ims, {}, "/tmp/priors_scene/sparse/0")
EOF
  cat > /tmp/priors_prompts.json <<'EOF'
{"prompts": [{"image": "IMG_9680.jpg", "box": [40, 120, 840, 720], "points": [[430, 420]], "labels": [1]}]}
EOF
  rand=(-s $scene -i images_4 --random_init_weights)
  {
    set -x
    time python3 extract_mask.py "${rand[@]}" --sam_model tiny --pred_iou 0 --stability 0 --min_area 100
    rc1=$?
    time python3 extract_mask.py "${rand[@]}" --sam_model large --mode roi \
      --prompts /tmp/priors_prompts.json --allow_empty --save_overlays
    rc2=$?
    time python3 predepth.py "${rand[@]}"
    rc3=$?
    set +x
    python3 - <<'EOF'
import glob, os
import numpy as np
from PIL import Image
s = "/tmp/priors_scene"
for f in sorted(glob.glob(f"{s}/masks/*.npz")):
    z = np.load(f)
    print("masks", os.path.basename(f), {k: (z[k].dtype.str, z[k].shape) for k in z.files})
for f in sorted(glob.glob(f"{s}/pure_masks/*")):
    a = np.asarray(Image.open(f))
    print("roi", os.path.basename(f), a.shape, a.dtype, "fg %.3f" % (a > 127).mean())
for f in sorted(glob.glob(f"{s}/depth_pro/*.npy")):
    d = np.load(f)
    m = np.load(f[:-4] + "_meta.npz")
    print("depth", os.path.basename(f), d.shape, d.dtype, "min %.3g max %.3g" % (d.min(), d.max()),
          {k: m[k].tolist() for k in m.files})
EOF
    echo "cli exit codes: auto=$rc1 roi=$rc2 predepth=$rc3"
  } 2>&1 | grep -v "it/s\]$" | tee "$out/priors_cli.log"
  echo "pytest exit code: $rc_tests" | tee -a "$out/priors_summary.txt"
  tail -n 1 "$out/priors_cli.log" | tee -a "$out/priors_summary.txt"
  ;;
*)
  echo "usage: gpu_priors_check.sh prepare|run" >&2
  exit 2
  ;;
esac
