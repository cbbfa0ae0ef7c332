"""The one entry point: a model (or run directory) and an export spec -> verified files.

Every format of the spec is written into a temporary directory beside `out_dir` as its row of
`export.spec.FORMAT_TABLE` says (its writer, fine-tune, input kind and extra figures): TFLite
files carry TFLite Metadata (labels, normalization, input, description) and are run on the
run's held-out images (its test split) by LiteRT and, for phone inputs, by MediaPipe's
ImageClassifier, against the Keras model on the same images; only files that pass are moved
into place, with labels.txt, metadata.json and report.json. Where each file errs: its row has
the per-class table (precision, recall, support) and OUT/errors/<format>/ its confusion.png and
mistakes.png (`train.confusion`), from the probabilities its verification computed (no extra
inference); per format, not for two chosen files, as a user may ship any one and they cost ~1 s
a format (2 CPU cores, 10 classes) beside tens of seconds to convert and verify it. A failing
format leaves no file (nor pictures) and makes `export` raise `VerificationError` once the
others are in place. Calibration and fine-tunes read the run's train split, once per export.
"""

import dataclasses
import functools
import os
import shutil
import tempfile
import time
import traceback
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

from export import formats, inputs, mediapipe_runtime, tflite_metadata, verify
from export.spec import FORMATS, ExportSpec, FineTuned
from train import confusion, rundir

ERRORS = "errors"
"""OUT/errors/<format>/: confusion.png and mistakes.png of each format that passed."""


def _predict(model, images):
    """Probabilities of a Keras 3 or tf_keras model, float32 (N, classes)."""
    return np.concatenate([np.asarray(model(tf.constant(images[i:i + 250]), training=False),
                                      np.float32) for i in range(0, len(images), 250)])


class _Feed(NamedTuple):
    """What the TFLite files of one export take (chosen once, by `ExportSpec.frames`): the
    held-out and calibration images in that form (float32 (N, h, w, C)), the Keras model's
    probabilities on the held-out ones, and `view` to make model inputs of them (None: they
    are model inputs already)."""

    images: np.ndarray
    calibration: np.ndarray
    reference: np.ndarray
    view: object = None

    def model_inputs(self, images):
        if self.view is None:
            return images
        return formats.frames_to_inputs(images, self.view).numpy()


def _feed(model, data, frames, reference) -> _Feed:
    """Camera frames (uint8 RGB as float32) or the model's own inputs; `reference`: the
    model's probabilities on `data.eval_inputs`."""
    if not frames:
        return _Feed(data.eval_inputs, data.calibration, reference)
    images = data.frames.astype(np.float32)
    feed = _Feed(images, data.calibration_frames.astype(np.float32), None, data.view)
    return feed._replace(reference=_predict(model, feed.model_inputs(images)))


@dataclasses.dataclass(frozen=True)
class _Job:
    """One export: the model, its data, the spec, and what every format is compared with.

    reference: the Keras model's probabilities on `data.eval_inputs`; feed: the files' inputs;
    mediapipe: why MediaPipe does not run, or None.
    """

    model: object
    data: inputs.ExportData
    spec: ExportSpec
    tmp: str
    recipe_name: str
    version: str
    keras_accuracy: float
    reference: np.ndarray
    feed: _Feed
    mediapipe: str | None

    @functools.cached_property
    def stream(self):
        """The fine-tunes' training stream (the run's train split), loaded once per export."""
        return inputs.train_stream(self.data, self.spec)

    def source(self, model, kind, name="keras"):
        path = os.path.join(self.tmp, f".source-{name}-{kind}")
        if not os.path.isdir(path):
            formats.source_saved_model(model, path, self.data.view, kind)
        return path

    def public_dataset(self):
        """The dataset's name as a shipped file may show it: a folder's base name, not the
        path on this machine."""
        dataset = self.data.dataset
        if dataset.startswith("folder:"):
            return "folder " + os.path.basename(os.path.normpath(dataset[len("folder:"):]))
        return dataset

    @functools.cached_property
    def frame_reference(self):
        """The Keras model's probabilities on the held-out images as camera frames."""
        if self.feed.view is not None:
            return self.feed.reference
        frames = self.data.frames.astype(np.float32)
        return _predict(self.model, formats.frames_to_inputs(frames, self.data.view).numpy())

    def description(self, fmt, input_words, size):
        """The sentence a file carries about itself; size: its input (h, w)."""
        return (f"{self.model.name} (He et al. 2016) trained on "
                f"{self.public_dataset()} with recipe {self.recipe_name}; Keras top-1 "
                f"{self.keras_accuracy:.4f} on "
                f"{len(self.data.eval_labels)} test images; format {fmt}; input "
                f"{input_words} {size[0]}x{size[1]}, values 0-255.")

    def card(self, content, fmt):
        model = verify.TFLiteModel(content, num_threads=1)
        meta = self.data
        description = self.description(
            fmt, "RGB uint8 frames" if self.spec.frames else "raw pixels", model.input_shape)
        return tflite_metadata.ModelCard(
            name=f"{self.model.name} {self.public_dataset()}", description=description,
            version=self.version, author=self.spec.author, license=self.spec.license,
            labels=tuple(meta.info.class_names),
            color_space="RGB" if model.input_shape[-1] == 3 else "GRAYSCALE",
            height=model.input_shape[0], width=model.input_shape[1],
            output_description="probabilities of the classes in labels.txt")


def _fine_tuned(job, fmt) -> FineTuned:
    """The model that format `fmt` converts: its row's fine-tune of the Keras model, or the
    Keras model itself."""
    fine_tune = FORMATS[fmt].fine_tune
    if fine_tune is None:
        return FineTuned(job.model, {})
    return fine_tune(job.model, job.stream, job.data, job.spec)


class _Converted(NamedTuple):
    """A TFLite format's bytes (with metadata), the probabilities of the model it was
    converted from on the feed's held-out images, and its figures for the report row."""

    content: bytes
    reference: np.ndarray
    report: dict


def _convert(job, fmt) -> _Converted:
    """Fine-tunes (where the row says so), converts and adds metadata to TFLite format `fmt`."""
    row, feed = FORMATS[fmt], job.feed
    tuned = _fine_tuned(job, fmt)
    kind = row.source_input(job.spec.frames)
    source = job.source(tuned.model, kind, fmt if row.fine_tune else "keras")
    content = formats.tflite(source, fmt, feed.calibration, io_dtype=job.spec.io_dtype,
                             frames=kind == "frames_int")
    content = tflite_metadata.add_metadata(content, job.card(content, fmt))
    reference = feed.reference if tuned.model is job.model \
        else _predict(tuned.model, feed.model_inputs(feed.images))
    report = dict(tuned.report)
    if row.extra_report:
        report.update(row.extra_report(content, job.model))
    if row.integer:
        report["non_integer_ops"] = formats.non_integer_ops(content)
    return _Converted(content, reference, report)


def _phone_checks(job, path, fmt, probabilities, row):
    """Metadata read back, and MediaPipe on the same frames; updates `row`."""
    problems = verify.verify_metadata(path, job.card(path, fmt))
    row["metadata_problems"] = problems
    if problems:
        row["passed"] = False
        row["failure"] = "TFLite Metadata does not match the model: " + "; ".join(problems)
        return
    if not job.spec.frames:
        row["mediapipe"] = "skipped: the file takes the model's own input (frames=False)"
        return
    if job.mediapipe:
        row["mediapipe"] = f"not run: {job.mediapipe}"
        return
    try:
        row.update(verify.verify_mediapipe(path, job.data.frames, job.data.eval_labels,
                                           probabilities, job.data.info.class_names,
                                           job.spec.min_agreement(fmt)))
    except ValueError as e:
        row.update(passed=False, failure=str(e))
        return
    row["mediapipe"] = "ran"
    if not row["mediapipe_passed"]:
        row["passed"] = False
        row["failure"] = (f"MediaPipe agrees with LiteRT on {row['mediapipe_agreement']:.4f} of "
                          f"the frames (names as labels: {row['mediapipe_names_ok']})")


class _Checked(NamedTuple):
    """A writer's result: the report row, the file's probabilities (N, classes) on the
    held-out images (in the order of `data.eval_labels`)."""

    row: dict
    probabilities: np.ndarray


def _write_saved_model(job, fmt):
    """Writes and verifies the SavedModel into job.tmp; returns its `_Checked`."""
    path = os.path.join(job.tmp, FORMATS[fmt].file)
    formats.saved_model(job.model, path, job.data.view, job.data.info.class_names)
    return _Checked(*verify.verify_saved_model(path, job.data.raw, job.data.eval_labels,
                                               job.reference,
                                               min_agreement=job.spec.min_agreement(fmt)))


def _write_tflite(job, fmt):
    """Writes and verifies one TFLite format into job.tmp; returns its `_Checked`."""
    spec, data = job.spec, job.data
    path = os.path.join(job.tmp, FORMATS[fmt].file)
    threshold = spec.min_agreement(fmt)
    converted = _convert(job, fmt)
    rundir.atomic_write(path, converted.content)
    row, probabilities = verify.verify_tflite(path, job.feed.images, data.eval_labels,
                                              converted.reference, min_agreement=threshold,
                                              threads=spec.threads,
                                              latency_runs=spec.latency_runs, name=fmt)
    row.update(converted.report)
    if converted.report.get("non_integer_ops"):
        logging.warning("%s is not fully integer: %s", fmt, converted.report["non_integer_ops"])
    if not row["passed"]:
        row["failure"] = f"agreement {row['agreement']:.4f} < {threshold}"
        return _Checked(row, probabilities)
    _phone_checks(job, path, fmt, probabilities, row)
    return _Checked(row, probabilities)


def _write_onnx(job, fmt):
    """Writes and verifies the ONNX file (`export.onnx_format`: uint8 RGB images of any batch
    size, the view and normalization inside, labels in its metadata) into job.tmp: ONNX
    Runtime on the held-out frames against the Keras model on the same frames, and its
    metadata read back. Returns its `_Checked`."""
    from export import onnx_format

    spec, data = job.spec, job.data
    path = os.path.join(job.tmp, FORMATS[fmt].file)
    onnx_format.write_onnx(job.model, path, data.view, data.info.class_names,
                           description=job.description(fmt, "RGB uint8 images (any batch)",
                                                       data.view.inner_size))
    threshold = spec.min_agreement(fmt)
    row, probabilities = onnx_format.verify_onnx(
        path, data.frames, data.eval_labels, job.frame_reference, min_agreement=threshold,
        threads=spec.threads, latency_runs=spec.latency_runs, name=fmt)
    meta = onnx_format.read_onnx_metadata(path)
    row["metadata_problems"] = [
        f"{key}: the file says {got!r}, the model needs {want!r}"
        for key, got, want in (("labels", meta.labels, tuple(data.info.class_names)),
                               ("view", meta.view, data.view)) if got != want]
    if not row["passed"]:
        row["failure"] = f"agreement {row['agreement']:.4f} < {threshold}"
    elif row["metadata_problems"]:
        row["passed"] = False
        row["failure"] = "ONNX metadata does not match the model: " + "; ".join(
            row["metadata_problems"])
    return _Checked(row, probabilities)


_WRITERS = {"saved_model": _write_saved_model, "tflite": _write_tflite, "onnx": _write_onnx}
"""`Format.writer` -> the function that writes and verifies such a format."""


def _errors(job, fmt, probabilities):
    """Writes job.tmp/errors/<fmt>/confusion.png and mistakes.png (on the held-out frames);
    returns the row's figures of where the file errs, its pictures' paths relative to OUT."""
    folder = os.path.join(ERRORS, fmt)
    report = confusion.write_error_report(os.path.join(job.tmp, folder), job.data.eval_labels,
                                          probabilities, job.data.info.class_names,
                                          job.data.frames)
    figures = {k: os.path.join(folder, os.path.basename(v)) for k, v in report["figures"].items()}
    return {**{k: report[k] for k in ("per_class", "balanced_accuracy", "worst_class",
                                      "most_confused")}, "figures": figures}


def _export_one(job, fmt):
    """Writes and verifies one format into job.tmp, with its pictures; returns its row."""
    checked = _WRITERS[FORMATS[fmt].writer](job, fmt)
    checked.row.update(_errors(job, fmt, checked.probabilities))
    return checked.row


def _export_one_safely(job, fmt):
    """`_export_one`, with an error in one format (a converter refusing an op, MediaPipe
    refusing the file) turned into that format's failed row: the other formats still run and
    their files are still written."""
    try:
        return _export_one(job, fmt)
    except Exception as e:  # noqa: BLE001  (reported in the row and in VerificationError)
        logging.warning("%s failed: %s: %s (traceback in report.json)", fmt, type(e).__name__, e)
        return {"format": fmt, "file": FORMATS[fmt].file, "passed": False,
                "failure": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def _prepare_job(source, spec, tmp):
    src = inputs.load_source(source)
    dataset = spec.dataset or (src.recipe.dataset if src.recipe else None)
    if not dataset:
        raise ValueError("Which dataset? Pass ExportSpec(dataset=...) (--dataset): its training "
                         "images calibrate int8 and its test images verify every export.")
    model = formats.probabilities_model(src.model)
    data = inputs.load_data(dataset, formats.input_shape(model), spec, src)
    if model.output_shape[-1] != data.info.num_classes:
        raise ValueError(f"The model has {model.output_shape[-1]} outputs but {dataset!r} has "
                         f"{data.info.num_classes} classes: pick the dataset it was trained on.")
    mediapipe = None
    if spec.mediapipe != "off":
        mediapipe = mediapipe_runtime.available()
        if mediapipe and spec.mediapipe == "on":
            raise ValueError(f"mediapipe='on' but {mediapipe}")
    digest = (src.summary.weights_sha256 if src.summary else None) or ""
    reference = _predict(model, data.eval_inputs)
    job = _Job(model, data, spec, tmp, recipe_name=src.recipe.name if src.recipe else "unknown",
               version=spec.version or digest[:12] or "1",
               keras_accuracy=float(np.mean(reference.argmax(-1) == data.eval_labels)),
               reference=reference, feed=_feed(model, data, spec.frames, reference),
               mediapipe=mediapipe)
    return src, job


def _move_into_place(src, dst):
    """Replaces `dst` by `src` (a file or a directory) with renames on one filesystem."""
    if os.path.isdir(src) and os.path.exists(dst):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(dst))
        os.replace(dst, os.path.join(old, "x"))
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _report(src, job, rows):
    data = job.data
    return {"model": job.model.name, "source": src.path, "dataset": data.dataset,
            "split": data.split, "train_split": data.train_split,
            "eval_images": len(data.eval_labels),
            "available_images": data.available, "all_images": data.all_images,
            "keras_accuracy": job.keras_accuracy, "view": data.view.to_dict(),
            "class_names": list(data.info.class_names), "frames": job.spec.frames,
            "mediapipe": job.mediapipe or "available", "formats": rows,
            "spec": dataclasses.asdict(job.spec)}


def export(source, out_dir, spec=None) -> dict:
    """Exports `source` (Keras model, .keras file or run directory) to `out_dir`; returns the
    report (also written as out_dir/report.json). See the module docstring."""
    spec = spec or ExportSpec()
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-tmp-", dir=out_dir)
    try:
        src, job = _prepare_job(source, spec, tmp)
        if not job.data.all_images:
            logging.warning("Verifying on the first %d of %d test images.",
                            len(job.data.eval_labels), job.data.available)
        rows = []
        for fmt in spec.formats:
            start = time.time()
            logging.info("Exporting %s ...", fmt)
            row = _export_one_safely(job, fmt)
            row.update(keras_accuracy=job.keras_accuracy, seconds=round(time.time() - start, 1))
            rows.append(row)
            if not row["passed"]:
                logging.error("%s FAILED verification (%s); no file written.", fmt,
                              row.get("failure"))
        report = _report(src, job, rows)
        rundir.write_labels(tmp, job.data.info.class_names)
        rundir.write_json(os.path.join(tmp, "metadata.json"), {
            k: report[k] for k in ("model", "dataset", "view", "class_names", "frames")})
        rundir.write_json(os.path.join(tmp, "report.json"), report)
        passed = [r for r in rows if r["passed"]]
        if passed:
            os.makedirs(os.path.join(out_dir, ERRORS), exist_ok=True)
        pictures = [os.path.join(ERRORS, r["format"]) for r in passed]
        for name in [r["file"] for r in passed] + pictures + ["labels.txt", "metadata.json",
                                                              "report.json"]:
            _move_into_place(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failures = [r for r in rows if not r["passed"]]
    if failures:
        raise verify.VerificationError(
            "Export verification failed for "
            + ", ".join(f"{r['format']} ({r.get('failure')})" for r in failures)
            + f"; no model file was written for them. Report: {out_dir}/report.json\n"
            + verify.format_table(rows))
    return report
