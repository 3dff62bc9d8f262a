#!/usr/bin/env bash
# Set up (scripts/setup.sh), then make the embedded demo scene, train, render and score it,
# and print the metrics table. Extra arguments go to scripts/demo.py (e.g. --fast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python scripts/demo.py "$@"
