"""Runs exported files as a device would and checks them against the Keras model.

- `verify_tflite`: the LiteRT interpreter (XNNPACK) on held-out images: top-1 accuracy (and
  top-5 from 6 classes on), agreement with the reference (the Keras model's probabilities on
  the same images), max abs difference, file size, batch-1 latency at 1 and 2 threads.
- `verify_metadata`: the file's own TFLite Metadata read back: labels, normalization, input.
- `verify_mediapipe`: MediaPipe Tasks' ImageClassifier (what Android, iOS and web apps use) on
  the same frames: its top-1 beside LiteRT's, and the category names it returned.
- `verify_saved_model`: the SavedModel's uint8 `serving_default` on the images as stored.
`format_table` prints the rows side by side.
"""

import os
import statistics
import time

import numpy as np
import tensorflow as tf
from absl import logging

from export import mediapipe_runtime, tflite_metadata


def median_ms(fn, runs, warmup=3) -> float:
    """Median wall time of `runs` calls of `fn()` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class VerificationError(RuntimeError):
    """An exported model disagrees with its reference more than allowed."""


class TFLiteModel:
    """A `.tflite` file (or its bytes) behind `predict(raw float32 pixels) -> probabilities`.

    Quantized inputs are quantized with the model's own scale and zero point, quantized outputs
    dequantized, so every format is called alike. XNNPACK is the CPU delegate (LiteRT's default).
    """

    def __init__(self, model, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.name = model if isinstance(model, (str, os.PathLike)) else "<bytes>"
        content = _read_tflite(model)
        try:
            self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(
                f"{self.name} is not a valid TFLite model (truncated or corrupt?): {e}. "
                "Export it again with `python -m export`."
            ) from None
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        self.input_shape = tuple(int(s) for s in self._input["shape_signature"][1:])
        # 1 for camera-frame files (one frame per call), -1 for the model's own batched input
        self.batch_signature = int(self._input["shape_signature"][0])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.input_quantization = tuple(self._input["quantization"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self._batch = None

    def _resize(self, batch):
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"],
                                                 (batch, *self.input_shape))
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]
            self._batch = batch

    def _quantize(self, images):
        if self.input_dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        q = np.round(images / scale + zero_point) if scale else np.round(images)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, outputs):
        if self.output_dtype == np.float32:
            return outputs
        scale, zero_point = self._output["quantization"]
        return (outputs.astype(np.float32) - zero_point) * scale

    def predict(self, images, batch_size=100, progress=False):
        """Pixels (N, H, W, C) as the file takes them (float32 model inputs, or uint8 frames
        given as numbers) -> float32 probabilities (N, classes)."""
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name} takes images of shape (N, {self.input_shape}); "
                             f"received {images.shape}.")
        outputs = []
        bar = _progbar(len(images)) if progress else None
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            self._resize(len(batch))
            self.interpreter.set_tensor(self._input["index"], self._quantize(batch))
            self.interpreter.invoke()
            outputs.append(self._dequantize(self.interpreter.get_tensor(self._output["index"])))
            if bar:
                bar.add(len(batch))
        return np.concatenate(outputs)

    def latency_ms(self, runs=50, warmup=5):
        """Median batch-1 latency in milliseconds (input: zeros)."""
        self._resize(1)
        self.interpreter.set_tensor(self._input["index"],
                                    np.zeros((1, *self.input_shape), self.input_dtype))
        return median_ms(self.interpreter.invoke, runs, warmup)


def _read_tflite(model):
    if not isinstance(model, (str, os.PathLike)):
        return bytes(model)
    if not os.path.isfile(model):
        raise ValueError(f"{model} is not a file: expected a .tflite model.")
    with open(model, "rb") as f:
        content = f.read()
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError(f"{model} is not a TFLite model (no 'TFL3' flatbuffer identifier; "
                         f"{len(content)} bytes).")
    return content


def _progbar(total):
    import keras

    return keras.utils.Progbar(total, unit_name="image")


TOP5_MIN_CLASSES = 6
"""Top-5 accuracy is reported from this many classes on (with 5 or fewer it is always 1)."""


def top5_accuracy(probabilities, labels) -> float:
    """Share of `labels` (N,) among the 5 largest of `probabilities` (N, classes)."""
    top = np.argsort(-np.asarray(probabilities), axis=-1)[:, :5]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))


def compare(probabilities, reference, labels):
    """Top-1 accuracy of both, top-1 agreement and max abs difference, as a dict (and
    `top5_accuracy` of `probabilities` from TOP5_MIN_CLASSES classes on)."""
    predicted, expected = probabilities.argmax(-1), reference.argmax(-1)
    row = {
        "images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "reference_accuracy": float(np.mean(expected == labels)),
        "agreement": float(np.mean(predicted == expected)),
        "max_abs_diff": float(np.max(np.abs(probabilities - reference))),
    }
    if probabilities.shape[-1] >= TOP5_MIN_CLASSES:
        row["top5_accuracy"] = top5_accuracy(probabilities, labels)
    return row


def verify_tflite(path, images, labels, reference, *, min_agreement, threads=(1, 2),
                  latency_runs=50, name=None):
    """Runs `path` on held-out `images` and compares with `reference` probabilities.

    Returns (the report dict: file, size, accuracies, agreement, max abs diff, latency per
    thread count, passed; the file's probabilities). Does not raise: the caller decides what a
    failure does.
    """
    model = TFLiteModel(path, num_threads=max(threads))
    probabilities = model.predict(images, progress=True)
    report = {"format": name, "file": os.path.basename(path), "size_bytes": os.path.getsize(path),
              **compare(probabilities, reference, np.asarray(labels)),
              "input_dtype": model.input_dtype.name,
              "input_quantization": [float(v) for v in model.input_quantization]}
    report["latency_ms"] = {
        str(n): round(TFLiteModel(path, num_threads=n).latency_ms(latency_runs), 3)
        for n in threads
    }
    report["min_agreement"] = min_agreement
    report["passed"] = report["agreement"] >= min_agreement
    logging.info("Verified %s: agreement %.4f (min %.4f), accuracy %.4f.", path,
                 report["agreement"], min_agreement, report["accuracy"])
    return report, probabilities


def verify_metadata(path, card) -> list:
    """Problems of the file's TFLite Metadata against what the model expects (`card`, an
    `export.tflite_metadata.ModelCard`): [] when labels, input size, color space and
    normalization read back as written and the input quantization maps frames to pixels."""
    try:
        meta = tflite_metadata.read_metadata(path)
    except ValueError as e:
        return [str(e)]
    def plain(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    problems = [f"{key}: the file says {meta.get(key)!r}, the model needs {getattr(card, key)!r}"
                for key in ("labels", "color_space", "mean", "std", "name")
                if plain(meta.get(key)) != plain(getattr(card, key))]
    model = TFLiteModel(path, num_threads=1)
    if (meta.get("height"), meta.get("width")) != model.input_shape[:2]:
        problems.append(f"input size: metadata {meta.get('height')}x{meta.get('width')}, "
                        f"tensor {model.input_shape[:2]}")
    scale, zero_point = model.input_quantization
    if model.input_dtype == np.uint8 and scale and (abs(scale * card.std[0] - 1) > 1e-6
                                                    or abs(zero_point - card.mean[0]) > 0.5):
        problems.append(f"uint8 input quantization (scale {scale}, zero point {zero_point}) "
                        f"does not take pixels as they come (MediaPipe feeds them unchanged)")
    return problems


def verify_mediapipe(path, frames, labels, litert_probabilities, class_names, min_agreement):
    """MediaPipe ImageClassifier on uint8 RGB `frames`: its accuracy, its top-1 agreement with
    LiteRT's on the same frames, and whether the names it returned are the labels. Raises
    ValueError with MediaPipe's own message when it refuses the file."""
    with mediapipe_runtime.ImageClassifierRunner(path) as runner:
        top1, names, _ = runner.classify(frames)
    litert = litert_probabilities.argmax(-1)
    expected_names = [class_names[i] for i in top1]
    row = {"mediapipe_accuracy": float(np.mean(top1 == labels)),
           "mediapipe_agreement": float(np.mean(top1 == litert)),
           "mediapipe_names_ok": list(names) == expected_names,
           "mediapipe_names": sorted(set(names))[:12]}
    row["mediapipe_passed"] = (row["mediapipe_agreement"] >= min_agreement
                               and row["mediapipe_names_ok"])
    return row


def dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def verify_saved_model(path, raw_groups, labels, reference, *, min_agreement, runs=20):
    """Runs the uint8 `serving_default` of a SavedModel on the images as stored (same-size
    groups `[(indices, uint8 (n, h, w, C))]`); compares with `reference`. Returns (the report
    row, the file's probabilities (N, classes) in the order of `labels`), as `verify_tflite`."""
    serve = tf.saved_model.load(path).signatures["serving_default"]
    probabilities = np.zeros_like(reference)
    for index, images in raw_groups:
        out = [serve(images=tf.constant(images[i:i + 250]))["probabilities"].numpy()
               for i in range(0, len(images), 250)]
        probabilities[index] = np.concatenate(out)
    one = tf.constant(raw_groups[0][1][:1])
    latency = median_ms(lambda: serve(images=one), runs, warmup=3)
    row = {"format": "saved_model", "file": os.path.basename(path), "size_bytes": dir_size(path),
           **compare(probabilities, reference, labels), "input_dtype": "uint8 (any size)",
           "latency_ms": {"tf": round(latency, 3)},
           "min_agreement": min_agreement}
    row["passed"] = row["agreement"] >= min_agreement
    return row, probabilities


COLUMNS = (
    ("format", "format", "{}"),
    ("size", "size_bytes", "{}"),
    ("input", "input_dtype", "{}"),
    ("acc", "accuracy", "{:.4f}"),
    ("top-5", "top5_accuracy", "{:.4f}"),
    ("ref acc", "reference_accuracy", "{:.4f}"),
    ("agree", "agreement", "{:.4f}"),
    ("MediaPipe acc", "mediapipe_accuracy", "{:.4f}"),
    ("MP=LiteRT", "mediapipe_agreement", "{:.4f}"),
    ("ms 1 thr", ("latency_ms", "1"), "{:.2f}"),
    ("ms 2 thr", ("latency_ms", "2"), "{:.2f}"),
    ("ok", "passed", "{}"),
)
"""(title, row key or key path, format) of `format_table`: acc is the file's top-1 in its own
runtime, ref acc its reference's (export: the Keras model), agree their top-1 agreement."""
OPTIONAL_COLUMNS = ("top5_accuracy",)
"""Shown only when a row has them (top-5: from TOP5_MIN_CLASSES classes on)."""


def _cell(row, key, fmt):
    value = row
    for k in (key if isinstance(key, tuple) else (key,)):
        value = value.get(k) if isinstance(value, dict) else None
    if value is None:
        return "-"
    if key == "size_bytes":
        return _human_size(value)
    return fmt.format(value)


def _human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_table(rows):
    """A fixed-width text table of report rows (export's and `export.evaluate`'s; see COLUMNS)."""
    columns = [c for c in COLUMNS
               if c[1] not in OPTIONAL_COLUMNS or any(c[1] in row for row in rows)]
    cells = [[title for title, _, _ in columns]]
    cells += [[_cell(row, key, fmt) for _, key, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
