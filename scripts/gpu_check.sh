#!/usr/bin/env bash
# Run the GPU half of the test suite on a CUDA machine that has no package registry:
# install the carried wheels, restore or build the CUDA extensions, run the tests marked
# `gpu`; logs under $OUT (or ./gpu_out). The `tests` step of scripts/gpu_session.sh.
#
# Usage (repo root): bash scripts/gpu_check.sh [pytest args...]
# The wheels come from: bash ../shared/gpu/wheels.sh .whl   (run where pip works)
TEST_ARGS="$*" exec bash scripts/gpu_session.sh tests
