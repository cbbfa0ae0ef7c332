"""Batch-1 CPU latency of ResNet-18/50 in every runtime a user would deploy, in one run.

    pip install onnxruntime tf2onnx   # the peer, not a dependency of the package
    python benchmarks/bench_export.py [--models=resnet18,resnet50] [--runs=30]

TF graph (`tf.function`, TF's own thread pool); TFLite (XNNPACK, at each of --threads)
float32, float16, int8 as exported (per-channel weights, float I/O), int8 with per-tensor
weights, int8 with uint8 I/O; ONNX Runtime float32 (tf2onnx via `model.export(format="onnx")`)
and ONNX Runtime int8 (static QDQ quantization, per-channel, the same calibration images).
Weights are random (He init): latency does not depend on their values; int8 is calibrated on
random caffe-preprocessed images. For each TFLite file it also counts the ops XNNPACK leaves
undelegated. Prints the CPU's instruction sets, then a table with each figure's ratio to TFLite
float32 at the same thread count. Figures move by 10-20% between runs on a busy machine:
compare within one run.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_resnet  # noqa: E402
from export import formats  # noqa: E402
from export.verify import TFLiteModel  # noqa: E402
from train import strategies  # noqa: E402

flags.DEFINE_list("models", ["resnet18", "resnet50"], "keras_resnet architectures.")
flags.DEFINE_integer("size", 224, "Input height and width.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for TFLite and ONNX Runtime.")
flags.DEFINE_integer("runs", 30, "Timed batch-1 runs per figure (median reported).")
flags.DEFINE_integer("calibration_images", 16, "Random images that calibrate int8.")
flags.DEFINE_bool("onnx", True, "Include ONNX Runtime (needs onnxruntime and tf2onnx).")
FLAGS = flags.FLAGS


def median_ms(fn, runs, warmup=3):
    from export.verify import median_ms as median  # the one timing loop of export's reports

    return median(fn, runs, warmup)


def onnx_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def undelegated_ops(content):
    """(number of XNNPACK partitions, names of the ops XNNPACK (LiteRT's default CPU delegate)
    leaves to LiteRT's own kernels). The node list holds the original ops and the delegate
    nodes; an original op runs itself when its output feeds a delegate node or the model's
    output without a delegate producing it, or feeds such an op."""
    interpreter = TFLiteModel(content, num_threads=1).interpreter
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    produced = {t for op in delegates for t in op["outputs"]}
    needed = {t for op in delegates for t in op["inputs"]}
    needed |= {d["index"] for d in interpreter.get_output_details()}
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    running = []
    while True:
        new = [op for op in original if op not in running
               and set(op["outputs"]) & needed and not set(op["outputs"]) <= produced]
        if not new:
            break
        running += new
        needed |= {t for op in new for t in op["inputs"]}
    return len(delegates), sorted({op["op_name"] for op in running})


def tflite_rows(name, source, calibration, threads, runs):
    variants = {
        "TFLite float32": dict(fmt="float32"),
        "TFLite float16": dict(fmt="float16"),
        "TFLite int8": dict(fmt="int8"),
        "TFLite int8 per-tensor": dict(fmt="int8", per_channel=False),
        "TFLite int8 uint8 I/O": dict(fmt="int8_io"),
    }
    rows = []
    for runtime, kwargs in variants.items():
        content = formats.tflite(source, representative=calibration, **kwargs)
        partitions, left = undelegated_ops(content)
        for n in threads:
            rows.append((runtime, n, TFLiteModel(content, num_threads=n).latency_ms(runs)))
            print(f"{name}: {runtime} {n} thread(s) {rows[-1][2]:.2f} ms; XNNPACK partitions: "
                  f"{partitions}, ops outside them: {left or 'none'}", flush=True)
    return rows


def onnx_rows(name, model, x, calibration, work, threads, runs):
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
        from onnxruntime import quantization as q
    except ImportError:
        print("ONNX Runtime skipped: pip install onnxruntime tf2onnx", flush=True)
        return []
    path = os.path.join(work, name + ".onnx")
    model(x)  # Keras' ONNX export needs a called model
    model.export(path, format="onnx", verbose=False)
    input_name = onnx_session(path, 1).get_inputs()[0].name

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    int8_path = os.path.join(work, name + "_int8.onnx")
    q.quantize_static(path, int8_path, Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QInt8,
                      weight_type=q.QuantType.QInt8)
    rows = []
    for runtime, file in (("ONNX Runtime float32", path), ("ONNX Runtime int8 QDQ", int8_path)):
        for n in threads:
            session = onnx_session(file, n)
            feed = {input_name: x}
            rows.append((runtime, n, median_ms(lambda: session.run(None, feed), runs)))
            print(f"{name}: {runtime} {n} thread(s) {rows[-1][2]:.2f} ms", flush=True)
    return rows


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
    source = formats.source_saved_model(model, os.path.join(work, name + "_saved_model"))
    calibration = keras_resnet.preprocess_input(np.random.default_rng(1).uniform(
        0, 255, (FLAGS.calibration_images, size, size, 3)), mode="caffe")
    rows += tflite_rows(name, source, calibration, threads, runs)
    if FLAGS.onnx:
        rows += onnx_rows(name, model, x, calibration, work, threads, runs)
    return rows


def table(results):
    lines = [f"{'model':<10} {'runtime':<24} {'threads':>7} {'ms':>9} {'vs TFLite f32':>14}",
             "-" * 68]
    for name, rows in results.items():
        f32 = {n: ms for runtime, n, ms in rows if runtime == "TFLite float32"}
        for runtime, n, ms in rows:
            reference = f32.get(n) or f32.get(max(f32))
            lines.append(f"{name:<10} {runtime:<24} {n!s:>7} {ms:>9.2f} {ms / reference:>13.2f}x")
        for variant in ("TFLite int8", "TFLite int8 per-tensor", "ONNX Runtime int8 QDQ"):
            int8 = {n: ms for runtime, n, ms in rows if runtime == variant}
            f32_peer = {n: ms for runtime, n, ms in rows if runtime == (
                "ONNX Runtime float32" if variant.startswith("ONNX") else "TFLite float32")}
            for n in sorted(int8):
                ratio = int8[n] / f32_peer[n]
                lines.append(f"{name:<10} {variant} / its float32 at {n} thread(s): {ratio:.2f}")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as work:
        for name in FLAGS.models:
            results[name] = bench_model(name, work)
    print(f"\nBatch-1 latency, median of {FLAGS.runs} runs, {os.cpu_count()} cores of "
          f"{strategies.cpu_features()}:\n")
    print(table(results))


if __name__ == "__main__":
    app.run(main)
