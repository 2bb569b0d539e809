#!/usr/bin/env bash
# One prepared GPU check (issue 25): the paper-width bf16 step, compile time cold and warm,
# 1 vs 8 seeds of the cpu-preset model and the C3D extraction pipeline, one JSON line each,
# in at most 8 minutes on one GPU. The logic is in tools/gpu_check.py (JSON is easier there);
# this wrapper only fixes the working directory and the import path, so that the same line
# runs from anywhere, on the device machine or in the test.
#
#   bash tools/gpu_check.sh                 # full sizes, needs an accelerator
#   bash tools/gpu_check.sh --tiny          # tiny sizes on any CPU (GPU_CHECK_TINY=1 too)
#   bash tools/gpu_check.sh --help          # --budget_s, --out, --videos
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" tools/gpu_check.py "$@"
