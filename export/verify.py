"""Runs exported models as a device would (LiteRT interpreter, XNNPACK) and checks them.

`verify_tflite` compares a `.tflite` file with its reference (the Keras model's probabilities on
the same held-out images): top-1 accuracy of both, top-1 agreement, max abs difference, file
size, batch-1 latency at 1 and 2 threads. `format_table` prints such reports side by side.
"""

import os
import statistics
import time

import numpy as np
from absl import logging


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
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, outputs):
        if self.output_dtype == np.float32:
            return outputs
        scale, zero_point = self._output["quantization"]
        return (outputs.astype(np.float32) - zero_point) * scale

    def predict(self, images, batch_size=100, progress=False):
        """float32 raw pixels (N, H, W, C) -> float32 probabilities (N, classes)."""
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
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


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


def compare(probabilities, reference, labels):
    """Top-1 accuracy of both, top-1 agreement and max abs difference, as a dict."""
    predicted, expected = probabilities.argmax(-1), reference.argmax(-1)
    return {
        "images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "reference_accuracy": float(np.mean(expected == labels)),
        "agreement": float(np.mean(predicted == expected)),
        "max_abs_diff": float(np.max(np.abs(probabilities - reference))),
    }


def verify_tflite(path, images, labels, reference, *, min_agreement, threads=(1, 2),
                  latency_runs=50, name=None):
    """Runs `path` on held-out `images` and compares with `reference` probabilities.

    Returns the report dict (file, size, accuracies, agreement, max abs diff, latency per
    thread count, passed). Does not raise: the caller decides what a failure does.
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
    return report


COLUMNS = (
    ("format", "format", "{}"),
    ("size", "size_bytes", "{}"),
    ("acc", "accuracy", "{:.4f}"),
    ("ref acc", "reference_accuracy", "{:.4f}"),
    ("agree", "agreement", "{:.4f}"),
    ("max|diff|", "max_abs_diff", "{:.2e}"),
    ("ms 1 thr", ("latency_ms", "1"), "{:.2f}"),
    ("ms 2 thr", ("latency_ms", "2"), "{:.2f}"),
    ("ok", "passed", "{}"),
)


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
    """A fixed-width text table of report rows (see COLUMNS)."""
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[_cell(row, key, fmt) for _, key, fmt in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
