#!/usr/bin/env bash
# Folder to phone at 224 px (issue 21): 4,000 phone photos (12/8 MP JPEGs, EXIF-rotated portraits,
# a __MACOSX/ folder, one cut file) -> a fine-tuned ResNet-18 -> verified int8 .tflite, timed
# on 2 CPU cores; then the shipped files judged on 200 new photos. Offline: the source model is
# made here on photos of other classes (no ImageNet weights can be fetched).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/p2p}"
PY=.venv/bin/python
MAKE=results/photos-to-phone/make_photos.py
[ -d "$OUT/source_photos" ] || $PY $MAKE "$OUT/source_photos" --classes=0,1,2,3,4,5 --size=320x240 --count=3000
[ -d "$OUT/new_photos" ] || $PY $MAKE "$OUT/new_photos" --images=test --count=200
[ -d "$OUT/photos" ] || $PY $MAKE "$OUT/photos" --count=4000
# The source: ResNet-18 trained on photos of Fashion-MNIST classes 0-5 at 112 px.
[ -f "$OUT/runs/source/model.keras" ] || $PY -m train --recipe=modern --model=resnet18 \
  --dataset="folder:$OUT/source_photos" --image_size=112 --steps=300 --batch_size=64 \
  --set=warmup_steps=30 --set=augment=flip --run_dir="$OUT/runs/source"
# The timed part: a cold cache (no working copies yet), then training and export, default flags.
$PY -c "import os, shutil, sys; from train import folders; shutil.rmtree(os.path.dirname(
folders.manifest_path(sys.argv[1])), ignore_errors=True)" "$OUT/photos"
t0=$(date +%s.%N)
$PY -m train --recipe=finetune --model=resnet18 --weights="$OUT/runs/source/model.keras" \
  --image_size=224 --dataset="folder:$OUT/photos" --run_dir="$OUT/runs/photos" "$@"
t1=$(date +%s.%N)
$PY -m export --run_dir="$OUT/runs/photos" --out="$OUT/runs/photos/export"
t2=$(date +%s.%N)
python3 -c "import sys; a, b, c = map(float, sys.argv[1:]); print(f'train {b - a:.0f} s, export {c - b:.0f} s, folder to verified int8 .tflite {c - a:.0f} s')" "$t0" "$t1" "$t2" | tee "$OUT/times.txt"
E="$OUT/runs/photos/export"
$PY -m export.evaluate "$E/model_int8.tflite" "$E/model_float32.tflite" "$E/model.onnx" \
  "$E/saved_model" --dataset="folder:$OUT/new_photos" --split=all \
  --reference="$E/model_float32.tflite" --out="$OUT/eval"
# Few photos, pretrained vs --weights=none at 224 px (another kind of data than the tests':
# colour photos of unseen classes, from a photo-domain source): 20 photos a class to train on,
# 100 other photos a class to test on, both from the 4,000.
F="$OUT/few"
[ -d "$F" ] || $PY - "$OUT/photos" "$F" <<'PYEOF'
import os, sys
photos, few = sys.argv[1:]
for name in sorted(os.listdir(photos)):
    if name.startswith((".", "__")) or not os.path.isdir(os.path.join(photos, name)):
        continue
    files = sorted(f for f in os.listdir(os.path.join(photos, name)) if "99999" not in f)
    for split, part in (("train", files[:20]), ("test", files[20:120])):
        os.makedirs(os.path.join(few, split, name), exist_ok=True)
        for f in part:
            os.symlink(os.path.join(photos, name, f), os.path.join(few, split, name, f))
PYEOF
for w in "$OUT/runs/source/model.keras" none; do
  $PY -m train --recipe=finetune --model=resnet18 --weights="$w" --image_size=224 \
    --dataset="folder:$F" --run_dir="$OUT/runs/few_$(basename "$w" .keras)"
done
