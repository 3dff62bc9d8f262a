#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the CPU test suite with the lint gate.
# GPU tests (marker `gpu`) skip without CUDA; run them on a GPU with scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff format --check .
ruff check .
python -m pytest -q "$@"
