#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh, with torch and jax for the cross-framework tests) and runs
# the default test suite (< 20 minutes on 2 cores). In CI (CI=true) the slow tests run after it.
set -euo pipefail
cd "$(dirname "$0")/.."
KERAS_RESNET_EXTRAS="test,torch" bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
.venv/bin/python -m pytest "$@"
if [ "${CI:-}" = "true" ] && [ $# -eq 0 ]; then
  .venv/bin/python -m pytest -m slow
fi
