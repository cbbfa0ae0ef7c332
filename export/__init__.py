"""Export room: from a trained model to files a server or a phone runs, verified.

    import export
    report = export.export("runs/r20/", "out/", export.ExportSpec(formats=("float32", "int8")))

`export` takes a model (a Keras 3 model, a `.keras` file or a run directory of `train.loop`)
and an `ExportSpec`, writes every format into a temporary directory beside `out_dir`, runs
each file on held-out images against the Keras model (`export.verify`), and only then moves
the files that passed into place, with labels.txt, metadata.json and report.json. A format
below its agreement threshold leaves no model file and makes `export` raise
`VerificationError` once the others are in place.
"""

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from export import formats, verify
from export.formats import FILES, FORMATS, FULLY_INTEGER
from export.verify import TFLiteModel, VerificationError, format_table

DEFAULT_FORMATS = ("saved_model", "float32", "float16", "dynamic", "int8", "int8_io")
FLOAT_FORMATS = ("saved_model", "float32", "float16", "pruned")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What to export and how to check it.

    formats: any of FORMATS. dataset / data_dir: the `train.data` dataset for calibration,
    fine-tuning and verification (default: the run's recipe). eval_images: held-out test
    images to verify on. calibration_images: training images for int8 calibration (and QAT's
    initial ranges). io_dtype: "uint8" or "int8" for int8_io. min_agreement_float /
    min_agreement_int8: the least top-1 agreement with the reference for float formats
    (float32, float16, pruned, SavedModel) and quantized ones (dynamic, int8, int8_io, qat).
    fine_tune_*: QAT and pruning fine-tuning (SGD, momentum 0.9); augment: its augmentation
    (default: the recipe's, else "none"). sparsity: pruning target. threads, latency_runs:
    batch-1 latency measurement.
    """

    formats: tuple = DEFAULT_FORMATS
    dataset: str | None = None
    data_dir: str | None = None
    eval_images: int = 2000
    calibration_images: int = 500
    io_dtype: str = "uint8"
    min_agreement_float: float = 0.99
    min_agreement_int8: float = 0.98
    fine_tune_steps: int = 300
    fine_tune_batch_size: int = 64
    fine_tune_learning_rate: float = 1e-3
    augment: str | None = None
    sparsity: float = 0.75
    threads: tuple = (1, 2)
    latency_runs: int = 50
    seed: int = 0

    def __post_init__(self):
        fmts = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        fmts = tuple(dict.fromkeys(fmts))  # each once, in the order given
        object.__setattr__(self, "formats", fmts)
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        unknown = [f for f in fmts if f not in FORMATS]
        if unknown or not fmts:
            raise ValueError(f"Unknown export format(s) {unknown or list(fmts)}: choose from "
                             f"{list(FORMATS)}.")
        if self.io_dtype not in formats.IO_DTYPES:
            raise ValueError(f"io_dtype must be one of {sorted(formats.IO_DTYPES)}; received "
                             f"{self.io_dtype!r}.")
        for name in ("min_agreement_float", "min_agreement_int8"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; received {getattr(self, name)}.")
        for name in ("eval_images", "calibration_images", "fine_tune_batch_size", "latency_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; received {getattr(self, name)}.")
        if self.fine_tune_steps < 2 and ("qat" in fmts or "pruned" in fmts):
            raise ValueError(f"fine_tune_steps must be >= 2 for qat/pruned; received "
                             f"{self.fine_tune_steps}.")
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1); received {self.sparsity}.")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be positive thread counts; received {self.threads}.")


# ---------------------------------------------------------------------------- the source


def load_source(source):
    """(Keras 3 model in float32, recipe dict or None) from a model, `.keras` file or run dir."""
    if isinstance(source, keras.Model):
        return formats.as_float32(source), None
    path = os.fspath(source)
    recipe = None
    if os.path.isdir(path):
        run_dir, path = path, os.path.join(path, "model.keras")
        recipe_path = os.path.join(run_dir, "recipe.json")
        if os.path.isfile(recipe_path):
            with open(recipe_path) as f:
                recipe = json.load(f)
        if not os.path.isfile(path):
            raise ValueError(f"{run_dir} is a directory without model.keras: pass a run "
                             "directory of `python -m train` (after training) or a .keras file.")
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist: pass a .keras model file or a run directory.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many kinds for a file that is no model
        raise ValueError(f"{path} is not a Keras model ({type(e).__name__}: {e}). Pass a .keras "
                         "file saved by model.save() or a run directory holding model.keras.") \
            from None
    return formats.as_float32(model), recipe


# ---------------------------------------------------------------------------------- data


@dataclasses.dataclass
class ExportData:
    """Images for calibration and verification, and how the model sees raw images."""

    info: object  # train.data.DatasetInfo
    input_spec: formats.InputSpec
    eval_images: np.ndarray  # float32 raw pixels (N, H, W, C), held out (test split)
    eval_labels: np.ndarray
    calibration: np.ndarray  # float32 raw pixels (M, H, W, C), training split
    augment: str


def _input_spec(info, shape):
    from train import data

    h, w, c = shape
    if None in tuple(info.image_shape):
        return formats.InputSpec(h, w, c, "center_crop", 0, round(min(h, w) * 256 / 224))
    pad = data.DATASETS[info.name].pad if info.name in data.DATASETS else 0
    pad = round(pad * h / info.image_shape[0])
    return formats.InputSpec(h, w, c, "stretch", pad)


def _as_arrays(ds):
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def load_data(dataset, shape, spec, recipe=None):
    """Held-out and calibration images of `dataset` at the model's input `shape` (H, W, C)."""
    from train import data

    test, info = data.load(dataset, f"test[:{spec.eval_images}]", data_dir=spec.data_dir)
    train, _ = data.load(dataset, f"train[:{spec.calibration_images}]", data_dir=spec.data_dir)
    input_spec = _input_spec(info, shape)
    if info.image_shape[-1] not in (None, shape[-1]):
        raise ValueError(f"Dataset {dataset!r} has {info.image_shape[-1]}-channel images but the "
                         f"model takes {shape}: pick the dataset the model was trained on.")
    view = "imagenet" if input_spec.resize == "center_crop" else "none"
    kw = dict(training=False, batch_size=250, augment=view, image_size=shape[:2])
    eval_images, eval_labels = _as_arrays(data.pipeline(test, info, **kw))
    calibration, _ = _as_arrays(data.pipeline(train, info, **kw))
    augment = spec.augment or (recipe or {}).get("augment") or "none"
    return ExportData(info, input_spec, eval_images, eval_labels, calibration, augment)


def _train_dataset(dataset, shape, spec, augment):
    from train import data

    ds, info = data.load(dataset, "train", data_dir=spec.data_dir)
    return data.pipeline(ds, info, training=True, batch_size=spec.fine_tune_batch_size,
                         augment=augment, seed=spec.seed, image_size=shape[:2],
                         shuffle_buffer=5000)


# ------------------------------------------------------------------------------- export


def _predict(model, images):
    return np.asarray(model.predict(images, batch_size=100, verbose=0), np.float32)


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _verify_saved_model(path, data, reference, spec):
    """Runs the uint8 `serving_default` of `path` on the held-out images."""
    serve = tf.saved_model.load(path).signatures["serving_default"]
    pad = data.input_spec.pad
    images = data.eval_images
    if pad:  # undo the dataset's padding: the signature takes images as they come
        images = images[:, pad:-pad, pad:-pad, :]
    images = np.round(images).astype(np.uint8)
    probabilities = np.concatenate([serve(images=tf.constant(images[i:i + 250]))["probabilities"]
                                    for i in range(0, len(images), 250)])
    times = []
    for i in range(min(spec.latency_runs, 20) + 3):
        start = time.perf_counter()
        serve(images=tf.constant(images[:1]))
        times.append(time.perf_counter() - start)
    return {"format": "saved_model", "file": FILES["saved_model"], "size_bytes": _dir_size(path),
            **verify.compare(probabilities, reference, data.eval_labels),
            "input_dtype": "uint8 (any size)", "latency_ms": {
                "tf": round(1000 * statistics.median(times[3:]), 3)}}


def _convert(fmt, model, float_source, data, spec, tmp, extras):
    """Writes format `fmt` into `tmp`; returns (path, reference probabilities, extra report)."""
    path = os.path.join(tmp, FILES[fmt])
    if fmt == "saved_model":
        formats.saved_model(model, path, extras["metadata"])
        return path, None, {}
    extra = {}
    reference = extras["reference"]
    if fmt == "float32":
        content = formats.tflite_float32(float_source)
    elif fmt == "float16":
        content = formats.tflite_float16(float_source)
    elif fmt == "dynamic":
        content = formats.tflite_dynamic(float_source)
    elif fmt == "int8":
        content = formats.tflite_int8(float_source, data.calibration)
    elif fmt == "int8_io":
        content = formats.tflite_int8(float_source, data.calibration, io_dtype=spec.io_dtype)
    elif fmt == "qat":
        from export import qat

        shape = data.eval_images.shape[1:]
        train = _train_dataset(data.info.name, shape, spec, data.augment)
        qat_model = qat.quantization_aware_training(
            model, train, data.calibration, steps=spec.fine_tune_steps,
            learning_rate=spec.fine_tune_learning_rate)
        reference = _predict(qat_model, data.eval_images)
        content = formats.tflite_quantization_aware(qat_model, data.calibration)
        extra = {"reference": "QAT tf_keras model",
                 "fine_tune_steps": spec.fine_tune_steps}
    elif fmt == "pruned":
        from export import prune

        shape = data.eval_images.shape[1:]
        train = _train_dataset(data.info.name, shape, spec, data.augment)
        pruned = prune.prune(model, train, sparsity=spec.sparsity, steps=spec.fine_tune_steps,
                             learning_rate=spec.fine_tune_learning_rate)
        reference = _predict(pruned, data.eval_images)
        content = formats.tflite_float32(pruned)
        dense = extras.get("float32_bytes") or formats.tflite_float32(float_source)
        extra = {"reference": "pruned tf_keras model", "sparsity": prune.weight_sparsity(pruned),
                 "zipped_bytes": prune.zipped_size(content),
                 "dense_zipped_bytes": prune.zipped_size(dense)}
        extra["zip_ratio"] = extra["dense_zipped_bytes"] / extra["zipped_bytes"]
    if fmt == "float32":
        extras["float32_bytes"] = content
    if fmt in FULLY_INTEGER:
        extra["non_integer_ops"] = formats.non_integer_ops(content)
        if extra["non_integer_ops"]:
            logging.warning("%s is not fully integer: %s", fmt, extra["non_integer_ops"])
    _write_bytes(path, content)
    return path, reference, extra


def _write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _move_into_place(src, dst):
    """Replaces `dst` by `src` (a file or a directory) with renames on one filesystem."""
    if os.path.isdir(src) and os.path.exists(dst):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(dst))
        os.replace(dst, os.path.join(old, "x"))
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def export(source, out_dir, spec=None):
    """Exports `source` (Keras model, .keras file or run directory) to `out_dir`; returns the
    report (also written as out_dir/report.json). See the module docstring."""
    spec = spec or ExportSpec()
    model, recipe = load_source(source)
    dataset = spec.dataset or (recipe or {}).get("dataset")
    if not dataset:
        raise ValueError("Which dataset? Pass ExportSpec(dataset=...) (--dataset): its training "
                         "images calibrate int8 and its test images verify every export.")
    shape = formats.input_shape(model)
    data = load_data(dataset, shape, spec, recipe)
    classes = model.output_shape[-1]
    if classes != data.info.num_classes:
        raise ValueError(f"The model has {classes} outputs but {dataset!r} has "
                         f"{data.info.num_classes} classes: pick the dataset it was trained on.")
    model = formats.probabilities_model(model)
    meta = formats.metadata(model, data.info.class_names, data.input_spec, dataset=dataset)
    if not meta["preprocessing"]["inside_model"]:
        logging.warning("%s has no normalization layer: the exported files take its input as "
                        "the model does, not necessarily raw pixels.", model.name)

    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-tmp-", dir=out_dir)
    rows, failures = [], []
    try:
        logging.info("Reference: %s on %d held-out images.", model.name, len(data.eval_images))
        reference = _predict(model, data.eval_images)
        keras_accuracy = float(np.mean(reference.argmax(-1) == data.eval_labels))
        extras = {"reference": reference, "metadata": meta}
        float_source = os.path.join(tmp, ".float_saved_model")
        if any(f not in ("saved_model", "qat") for f in spec.formats):
            formats.float_saved_model(model, float_source)
        for fmt in spec.formats:
            start = time.time()
            logging.info("Exporting %s ...", fmt)
            path, fmt_reference, extra = _convert(fmt, model, float_source, data, spec, tmp,
                                                  extras)
            threshold = (spec.min_agreement_float if fmt in FLOAT_FORMATS
                         else spec.min_agreement_int8)
            if fmt == "saved_model":
                row = _verify_saved_model(path, data, reference, spec)
                row.update(min_agreement=threshold, passed=row["agreement"] >= threshold)
            else:
                row = verify.verify_tflite(path, data.eval_images, data.eval_labels,
                                           fmt_reference, min_agreement=threshold,
                                           threads=spec.threads, latency_runs=spec.latency_runs,
                                           name=fmt)
            row.update(extra, keras_accuracy=keras_accuracy,
                       seconds=round(time.time() - start, 1))
            rows.append(row)
            if not row["passed"]:
                failures.append(row)
                _remove(path)
                logging.error("%s FAILED verification: agreement %.4f < %.4f; no file written.",
                              fmt, row["agreement"], threshold)
            else:
                meta["models"][FILES[fmt]] = _model_entry(row)
        report = {"model": model.name, "source": None if isinstance(source, keras.Model)
                  else os.fspath(source), "dataset": dataset, "eval_images": len(data.eval_images),
                  "keras_accuracy": keras_accuracy, "formats": rows,
                  "spec": dataclasses.asdict(spec)}
        passed = [r for r in rows if r["passed"]]
        if passed:
            _merge_models(meta, out_dir)
            formats.write_metadata(tmp, meta)
            for name in ("labels.txt", "metadata.json"):
                _move_into_place(os.path.join(tmp, name), os.path.join(out_dir, name))
        for row in passed:
            _move_into_place(os.path.join(tmp, row["file"]), os.path.join(out_dir, row["file"]))
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        _move_into_place(os.path.join(tmp, "report.json"), os.path.join(out_dir, "report.json"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        raise VerificationError(
            "Export verification failed for "
            + ", ".join(f"{r['format']} (agreement {r['agreement']:.4f} < {r['min_agreement']})"
                        for r in failures)
            + f"; no model file was written for them. Report: {out_dir}/report.json\n"
            + format_table(rows))
    return report


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _model_entry(row):
    entry = {"format": row["format"], "size_bytes": row["size_bytes"],
             "input_dtype": row.get("input_dtype")}
    if row.get("input_quantization") and row["input_quantization"][0]:
        entry["input_quantization"] = {"scale": row["input_quantization"][0],
                                       "zero_point": row["input_quantization"][1]}
    return entry


def _merge_models(meta, out_dir):
    """Keeps the entries of models exported earlier into `out_dir` that are still there."""
    path = os.path.join(out_dir, "metadata.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            old = json.load(f).get("models", {})
    except (OSError, ValueError):
        return
    for name, entry in old.items():
        if name not in meta["models"] and os.path.exists(os.path.join(out_dir, name)):
            meta["models"][name] = entry


__all__ = ["ExportSpec", "ExportData", "export", "load_source", "load_data", "formats",
           "verify", "TFLiteModel", "VerificationError", "format_table", "FORMATS",
           "DEFAULT_FORMATS", "FILES"]
