#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: train a ResNet on real
# Fashion-MNIST (offline, the `quickstart` recipe: a few minutes on 2 CPU cores), export it for
# phones (float32 and int8 TFLite with labels and normalization inside, verified in LiteRT and
# MediaPipe's ImageClassifier on all 10,000 test images), print accuracy and latency.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN="${RUN_DIR:-runs/quickstart}"
.venv/bin/python -m train --recipe=quickstart --run_dir="$RUN"
.venv/bin/python -m export --run_dir="$RUN" --formats=float32,int8 --out="$RUN/export"
