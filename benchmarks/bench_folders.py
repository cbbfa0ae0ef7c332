"""A user's photo folder at scale (issue 22): the folder rules on a generated tree.

    python benchmarks/bench_folders.py                       # 100,000 images (about 2 minutes)
    python benchmarks/bench_folders.py --num_images=5000 --classes=20

Writes `--num_images` tiny valid images (32x32, JPEG and PNG, from `--templates` distinct
drawn pictures so that writing is fast) as ROOT/<class>/<n>.<ext>, the most common layout (no
split folders, so the held-out split is made too), then in fresh processes measures:
1. the scan and order (`train.folders.scan`), the class table (`train.data.describe`), then
   `train.data.load` of 'train' and 'test' (each scans again, from the manifest), on a cold
   manifest and again on the unchanged tree (manifest used): wall time and peak RSS
   (`ru_maxrss`), beside the RSS after importing TensorFlow;
2. the input pipeline streaming from the tree (`KERAS_RESNET_IN_MEMORY_GB=0`): raw decode
   (`load` with EXIF orientation in the graph) and the training batches of
   `train.pipeline.batches` (cifar augmentation), in images/s.
Files are in the page cache (just written): the figures are CPU costs, not disk reads.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
import tensorflow as tf  # noqa
from train import data, pipeline
root, part = sys.argv[2], sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"rss_after_import_mb": base}
if part == "scan":
    from train import folders
    t = time.perf_counter()
    tree = folders.scan(root)
    out["scan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    table = data.describe("folder:" + root)
    out["describe_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, train = data.load("folder:" + root, "train")
    _, test = data.load("folder:" + root, "test")
    out["load_train_and_test_s"] = time.perf_counter() - t
    out.update(checked=tree.checked, cached=tree.cached, train=train.num_examples,
               test=test.num_examples, classes=train.num_classes, table_lines=table.count("\n"))
else:
    ds, info = data.load("folder:" + root, "train")
    n = int(sys.argv[4])
    raw = iter(ds.batch(256).prefetch(2))
    next(raw)
    t = time.perf_counter()
    seen = sum(int(next(raw)[0].shape[0]) for _ in range(n // 256))
    out["decode_images_per_s"] = seen / (time.perf_counter() - t)
    batches = pipeline.batches(ds, info, training=True, batch_size=128, shuffle_buffer=10_000)
    it = iter(batches)
    next(it)
    t = time.perf_counter()
    for _ in range(n // 128):
        next(it)
    out["train_batches_images_per_s"] = (n // 128) * 128 / (time.perf_counter() - t)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def cpu_line() -> str:
    with open("/proc/cpuinfo") as f:
        info = f.read()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    simd = sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni",
                                            "avx512_bf16", "amx_tile"))
    return f"CPU: {model}, {os.cpu_count()} cores, {' '.join(simd) or 'no avx2'}"


def generate(root, num_images, classes, templates):
    """ROOT/class<k>/<n>.{jpg,png}: copies of `templates` drawn 32x32 pictures per format."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    y, x = np.mgrid[:32, :32]
    for i in range(templates):
        image = np.stack([(x * (i + 1)) % 256, (y * 7 + i) % 256, (x + y) * 4 % 256], -1)
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, fmt)
            blobs.append((ext, buf.getvalue()))
    for k in range(classes):
        os.makedirs(os.path.join(root, f"class{k:03d}"), exist_ok=True)
    for n in range(num_images):
        ext, blob = blobs[n % len(blobs)]
        with open(os.path.join(root, f"class{n % classes:03d}", f"{n:06d}.{ext}"), "wb") as f:
            f.write(blob)


def child(root, part, *extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "KERAS_RESNET_IN_MEMORY_GB": "0"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, REPO, root, part, *map(str, extra)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(proc.stderr[-3000:])
    return {**json.loads(line[7:]), "process_wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--templates", type=int, default=64)
    parser.add_argument("--stream_images", type=int, default=20_000)
    parser.add_argument("--parts", default="scan,stream", help="scan, stream or both")
    parser.add_argument("--keep", help="generate into this folder and keep it")
    args = parser.parse_args()
    print(cpu_line())
    root = args.keep or tempfile.mkdtemp(prefix="bench_folders_")
    cache = tempfile.mkdtemp(prefix="bench_folders_keras_")
    os.environ["KERAS_HOME"] = cache  # a cold manifest, and none left in ~/.keras
    try:
        t = time.perf_counter()
        generate(root, args.num_images, args.classes, args.templates)
        print(f"generated {args.num_images} images in {args.classes} classes: "
              f"{time.perf_counter() - t:.1f} s")
        for run in ("first (cold manifest)", "second (manifest used)")[
                :2 * ("scan" in args.parts)]:
            r = child(root, "scan")
            print(f"{run}: scan + order {r['scan_s']:.2f} s (checked {r['checked']}, from "
                  f"manifest {r['cached']}), class table (describe) {r['describe_s']:.2f} s, "
                  f"load train+test {r['load_train_and_test_s']:.2f} s; peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB (after "
                  f"imports {r['rss_after_import_mb']:.0f} MB); {r['train']} train / "
                  f"{r['test']} test images, {r['classes']} classes")
        if "stream" in args.parts:
            r = child(root, "stream", args.stream_images)
            print(f"streaming from the tree: raw decode {r['decode_images_per_s']:.0f} "
                  f"images/s, training batches (cifar augment, batch 128) "
                  f"{r['train_batches_images_per_s']:.0f} images/s; peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
