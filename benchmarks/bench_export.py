"""Batch-1 CPU latency of ResNet-18/50 in every runtime a user would deploy, in one run.

    pip install onnxruntime tf2onnx   # the peer, not a dependency of the package
    python benchmarks/bench_export.py [--models=resnet18,resnet50] [--runs=30]

TF graph (`tf.function`, TF's own thread pool), TFLite float32 / float16 / int8 (XNNPACK at
each of --threads) and ONNX Runtime float32 (tf2onnx via `model.export(format="onnx")`, at
each of --threads). Weights are random (He init): latency does not depend on their values;
int8 is calibrated on random caffe-preprocessed images. Prints a table with each figure's
ratio to TFLite float32 at the same thread count, and the int8/float32 ratio against its
target (<= 0.35 for ResNet-50). Figures move by 10-20% between runs on a busy machine: compare
within one run.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_resnet  # noqa: E402
from export import formats  # noqa: E402
from export.verify import TFLiteModel  # noqa: E402

flags.DEFINE_list("models", ["resnet18", "resnet50"], "keras_resnet architectures.")
flags.DEFINE_integer("size", 224, "Input height and width.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for TFLite and ONNX Runtime.")
flags.DEFINE_integer("runs", 30, "Timed batch-1 runs per figure (median reported).")
flags.DEFINE_integer("calibration_images", 16, "Random images that calibrate int8.")
flags.DEFINE_float("target_ratio", 0.35, "Target int8/float32 latency ratio for ResNet-50.")
flags.DEFINE_bool("onnx", True, "Include ONNX Runtime (needs onnxruntime and tf2onnx).")
FLAGS = flags.FLAGS


def median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def onnx_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def bench_model(name, work):
    """[(runtime, threads, ms)] for architecture `name`."""
    size, runs = FLAGS.size, FLAGS.runs
    threads = [int(t) for t in FLAGS.threads]
    model = keras_resnet.create(name, weights=None, input_shape=(size, size, 3))
    x = keras_resnet.preprocess_input(
        np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), mode="caffe")
    rows = []
    graph = tf.function(lambda images: model(images, training=False))
    rows.append(("TF graph (tf.function)", "all", median_ms(lambda: graph(x), runs)))
    print(f"{name}: TF graph {rows[-1][2]:.1f} ms", flush=True)

    source = formats.float_saved_model(model, os.path.join(work, name + "_saved_model"))
    calibration = keras_resnet.preprocess_input(np.random.default_rng(1).uniform(
        0, 255, (FLAGS.calibration_images, size, size, 3)), mode="caffe")
    conversions = {
        "TFLite float32": lambda: formats.tflite_float32(source),
        "TFLite float16": lambda: formats.tflite_float16(source),
        "TFLite int8": lambda: formats.tflite_int8(source, calibration),
    }
    for runtime, convert in conversions.items():
        content = convert()
        for n in threads:
            rows.append((runtime, n, TFLiteModel(content, num_threads=n).latency_ms(runs)))
            print(f"{name}: {runtime} {n} thread(s) {rows[-1][2]:.1f} ms", flush=True)

    if FLAGS.onnx:
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            print("ONNX Runtime skipped: pip install onnxruntime tf2onnx", flush=True)
            return rows
        path = os.path.join(work, name + ".onnx")
        model(x)  # Keras' ONNX export needs a called model
        model.export(path, format="onnx", verbose=False)
        for n in threads:
            session = onnx_session(path, n)
            feed = {session.get_inputs()[0].name: x}
            rows.append(("ONNX Runtime float32", n, median_ms(lambda: session.run(None, feed),
                                                             runs)))
            print(f"{name}: ONNX Runtime {n} thread(s) {rows[-1][2]:.1f} ms", flush=True)
    return rows


def table(results):
    lines = [f"{'model':<10} {'runtime':<24} {'threads':>7} {'ms':>9} {'vs TFLite f32':>14}",
             "-" * 68]
    for name, rows in results.items():
        f32 = {n: ms for runtime, n, ms in rows if runtime == "TFLite float32"}
        for runtime, n, ms in rows:
            reference = f32.get(n) or f32.get(max(f32))
            lines.append(f"{name:<10} {runtime:<24} {n!s:>7} {ms:>9.2f} {ms / reference:>13.2f}x")
        int8 = {n: ms for runtime, n, ms in rows if runtime == "TFLite int8"}
        for n in sorted(int8):
            ratio = int8[n] / f32[n]
            verdict = ""
            if name == "resnet50":
                verdict = (" (target <= %.2f: %s)" % (FLAGS.target_ratio,
                           "met" if ratio <= FLAGS.target_ratio else "NOT met"))
            lines.append(f"{name:<10} int8/float32 at {n} thread(s): {ratio:.2f}{verdict}")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as work:
        for name in FLAGS.models:
            results[name] = bench_model(name, work)
    print("\nBatch-1 latency, median of %d runs (%d CPU cores):\n" % (FLAGS.runs, os.cpu_count()))
    print(table(results))


if __name__ == "__main__":
    app.run(main)
