#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: train a small ResNet on real
# Fashion-MNIST (offline), export it to int8 TFLite, print accuracy and latency.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
RUN="${RUN_DIR:-runs/quickstart}"
.venv/bin/python -m train --recipe=smoke --run_dir="$RUN"
.venv/bin/python -m export --run_dir="$RUN" --formats=float32,int8 --out="$RUN/export"
