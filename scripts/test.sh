#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, with torch and jax for the cross-framework tests) and runs
# the default test suite (< 20 minutes on 2 cores). Slow tests: scripts/test.sh -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
KERAS_RESNET_EXTRAS="test,torch" bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
.venv/bin/python -m pytest "$@"
