#!/usr/bin/env bash
# Create ./.venv (if missing) and install the CPU requirements into it.
# torch is installed first on its own: pick your build by setting TORCH_SPEC, e.g.
#   TORCH_SPEC="torch==2.13.0" (default) or TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
python -m pip install -q -r requirements.txt
python -c "import torch; print(f'torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
