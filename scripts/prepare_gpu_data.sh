#!/usr/bin/env bash
# Build the git-ignored scene folders that GPU calls carry (the GPU machine has no
# ../shared and no pycolmap), from ../shared/data, on this CPU machine (about 3 minutes):
#   data_local/maryrose_gpu          NeRD maryrose, 864x864, 12-view train-only COLMAP model
#                                    (gpu_session.sh maryrose: run_scene --done colmap_views)
#   data_local/slim/{dtu_scan24,fern}  3-view train-only model, stereo cloud, classical masks
#   data_local/fill/{dtu_scan24,fern}  the same with the segment-planar fill (mvs --fill_segments)
#   data_local/standin/{dtu_scan24,fern}  slim plus the train-only model of the non-test views
#                                    (17 fern, 9 DTU) that bench/alignment_standin.sh trains from
#   data_local/regseg/{dtu_scan24,fern}  slim plus mask_matching/ (gpu_session.sh regseg with
#                                    REGSEG_DATA=data_local/regseg)
# Carry each as needed (64 MiB a call): run's carry ["data_local/slim", ".whl", ...].
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
PY=${PYTHON:-python}
q() { "$@" 2>&1 | grep -E "^wrote|points:|fill:|error" || true; }
if [ ! -d data_local/maryrose_gpu/colmap_12views ]; then
  q $PY scripts/prepare_llff.py --factor 4 --src "$SHARED/nerd_maryrose" \
    --out data_local/maryrose_gpu --n_views 12 --overwrite
  q $PY colmap_match.py -s data_local/maryrose_gpu --n_views 12 --split_protocol llff --overwrite
fi
prep() { # name protocol prepare-command...
  local name=$1 proto=$2; shift 2
  local s=data_local/slim/$name f=data_local/fill/$name
  if [ ! -f $s/colmap_3views/dense/points3D.ply ]; then
    q "$@" --out $s --n_views 3 --overwrite
    q $PY colmap_match.py -s $s --n_views 3 --split_protocol $proto --overwrite
    q $PY -m mvs -s $s --n_views 3 --split_protocol $proto --overwrite --quiet
    q $PY extract_mask.py -s $s --mode auto --train_views_of $s/colmap_3views/split.json
  fi
  if [ ! -f $f/colmap_3views/dense/points3D.ply ]; then
    mkdir -p data_local/fill && rm -rf $f && cp -r $s $f
    rm -rf $f/colmap_3views/dense $f/depth_mvs
    q $PY -m mvs -s $f --n_views 3 --split_protocol $proto --overwrite --quiet --fill_segments
  fi
}
prep dtu_scan24 dtu $PY scripts/prepare_dtu.py --src "$SHARED/dtu_scan24_monosdf"
prep fern llff $PY scripts/prepare_llff.py --factor 8 --src "$SHARED/llff_fern"
for sv in "fern llff 17" "dtu_scan24 dtu 9"; do
  set -- $sv
  if [ ! -d data_local/standin/$1/colmap_$3views ]; then
    mkdir -p data_local/standin && rm -rf data_local/standin/$1
    cp -rl data_local/slim/$1 data_local/standin/$1
    q $PY colmap_match.py -s data_local/standin/$1 --n_views $3 --split_protocol $2 --overwrite
  fi
done
for sv in "fern llff" "dtu_scan24 dtu"; do
  set -- $sv
  if [ ! -f data_local/regseg/$1/mask_matching/model.pt ]; then
    mkdir -p data_local/regseg && rm -rf data_local/regseg/$1
    cp -rl data_local/slim/$1 data_local/regseg/$1
    q $PY -m mask_matching -s data_local/regseg/$1 --n_views 3 --split_protocol $2
  fi
done
find data_local -name database.db -delete
du -sh --apparent-size data_local/maryrose_gpu data_local/slim data_local/fill data_local/standin data_local/regseg
