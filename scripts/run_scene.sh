#!/usr/bin/env bash
# Photos (or a scene folder) to a trained, rendered, scored and segmented model in one
# command: every stage of the pipeline in order, each skipped when up to date.
#
#   bash scripts/run_scene.sh <scene> [-m MODEL] [--n_views N --split_protocol P] \
#       [--iterations I] [--no_sam2] [--depth_model DIR] [--force STAGE ...] [--dry_run] \
#       [-- <more train.py flags>]
#
# See scripts/run_scene.py for the stages, the skip rule and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
[ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ] && PY=.venv/bin/python
exec "$PY" scripts/run_scene.py "$@"
