"""The one entry point: a model (or run directory) and an export spec -> verified files.

Every format of the spec (`export.spec.FORMAT_TABLE`) is written into a temporary directory
beside `out_dir`, carries TFLite Metadata (labels, normalization, input, description), and is
run on held-out images by LiteRT and, for phone inputs, by MediaPipe's ImageClassifier, against
the Keras model on the same images; only files that pass are moved into place, with
labels.txt, metadata.json and report.json. A failing format leaves no file and makes `export`
raise `VerificationError` once the others are in place.
"""

import dataclasses
import os
import shutil
import tempfile
import time
import traceback

import numpy as np
import tensorflow as tf
from absl import logging

from export import formats, inputs, mediapipe_runtime, tflite_metadata, verify
from export.spec import FORMATS, ExportSpec
from train import rundir


def _predict(model, images):
    """Probabilities of a Keras 3 or tf_keras model, float32 (N, classes)."""
    return np.concatenate([np.asarray(model(tf.constant(images[i:i + 250]), training=False),
                                      np.float32) for i in range(0, len(images), 250)])


@dataclasses.dataclass
class _Job:
    """One export: the model, its data, the spec, and the sources converted from."""

    model: object
    data: inputs.ExportData
    spec: ExportSpec
    tmp: str
    dataset: str
    recipe_name: str
    version: str
    keras_accuracy: float = 0.0
    reference: np.ndarray = None
    frame_reference: np.ndarray = None
    mediapipe: str | None = None  # why MediaPipe does not run, or None

    def source(self, model, kind, name="keras"):
        path = os.path.join(self.tmp, f".source-{name}-{kind}")
        if not os.path.isdir(path):
            formats.source_saved_model(model, path, self.data.view, kind)
        return path

    def public_dataset(self):
        """The dataset's name as a shipped file may show it: a folder's base name, not the
        path on this machine."""
        if self.dataset.startswith("folder:"):
            return "folder " + os.path.basename(os.path.normpath(self.dataset[len("folder:"):]))
        return self.dataset

    def card(self, content, fmt):
        model = verify.TFLiteModel(content, num_threads=1)
        meta = self.data
        description = (f"{self.model.name} (He et al. 2016) trained on "
                       f"{self.public_dataset()} with recipe {self.recipe_name}; Keras top-1 "
                       f"{self.keras_accuracy:.4f} on "
                       f"{len(meta.eval_labels)} test images; format {fmt}; input "
                       f"{'RGB uint8 frames' if self.spec.frames else 'raw pixels'} "
                       f"{model.input_shape[0]}x{model.input_shape[1]}, values 0-255.")
        return tflite_metadata.ModelCard(
            name=f"{self.model.name} {self.public_dataset()}", description=description,
            version=self.version, author=self.spec.author, license=self.spec.license,
            labels=tuple(meta.info.class_names),
            color_space="RGB" if model.input_shape[-1] == 3 else "GRAYSCALE",
            height=model.input_shape[0], width=model.input_shape[1],
            output_description="probabilities of the classes in labels.txt")


def _fine_tuned(job, fmt):
    """(the model to convert, its reference probabilities on the inputs, extra report)."""
    kind = FORMATS[fmt].fine_tune
    if kind is None:
        return job.model, None, {}
    stream = inputs.train_stream(job.dataset, job.data.view, job.spec, job.data.augment)
    spec = job.spec
    if kind == "qat":
        from export import qat

        tuned = qat.quantization_aware_training(job.model, stream, job.data.calibration,
                                                steps=spec.fine_tune_steps,
                                                learning_rate=spec.fine_tune_learning_rate)
        return tuned, None, {"reference": "QAT tf_keras model",
                             "fine_tune_steps": spec.fine_tune_steps}
    from export import prune

    tuned = prune.prune(job.model, stream, sparsity=spec.sparsity, steps=spec.fine_tune_steps,
                        learning_rate=spec.fine_tune_learning_rate)
    return tuned, None, {"reference": "pruned tf_keras model",
                         "sparsity": prune.weight_sparsity(tuned)}


def _convert(job, fmt):
    """The .tflite bytes of `fmt` with metadata; (bytes, model inputs it takes, reference)."""
    spec, data = job.spec, job.data
    model, _, extra = _fine_tuned(job, fmt)
    integer = FORMATS[fmt].integer
    kind = ("frames" if spec.frames else "raw") + ("_int" if integer else "")
    name = FORMATS[fmt].fine_tune or "keras"
    representative = data.calibration_frames.astype(np.float32) if spec.frames \
        else data.calibration
    content = formats.tflite(job.source(model, kind, name), fmt, representative,
                             io_dtype=spec.io_dtype, frames=spec.frames and integer)
    content = tflite_metadata.add_metadata(content, job.card(content, fmt))
    images = data.frames.astype(np.float32) if spec.frames else data.eval_inputs
    if model is job.model:
        reference = job.frame_reference if spec.frames else job.reference
    else:
        reference = _predict(model, formats.frames_to_inputs(images, data.view).numpy()
                             if spec.frames else images)
    if fmt == "pruned":
        from export import prune

        dense = formats.convert_model(job.model)
        extra.update(zipped_bytes=prune.zipped_size(content),
                     dense_zipped_bytes=prune.zipped_size(dense))
        extra["zip_ratio"] = extra["dense_zipped_bytes"] / extra["zipped_bytes"]
    if FORMATS[fmt].integer:
        extra["non_integer_ops"] = formats.non_integer_ops(content)
    return content, images, reference, extra


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


def _export_one(job, fmt):
    """Writes and verifies one format into job.tmp; returns its report row."""
    spec, data = job.spec, job.data
    path = os.path.join(job.tmp, FORMATS[fmt].file)
    threshold = spec.min_agreement(fmt)
    if fmt == "saved_model":
        formats.saved_model(job.model, path, data.view, data.info.class_names)
        return verify.verify_saved_model(path, data.raw, data.eval_labels, job.reference,
                                         min_agreement=threshold)
    content, images, reference, extra = _convert(job, fmt)
    rundir.atomic_write(path, content)
    row, probabilities = verify.verify_tflite(path, images, data.eval_labels, reference,
                                              min_agreement=threshold, threads=spec.threads,
                                              latency_runs=spec.latency_runs, name=fmt)
    row.update(extra)
    if extra.get("non_integer_ops"):
        logging.warning("%s is not fully integer: %s", fmt, extra["non_integer_ops"])
    if not row["passed"]:
        row["failure"] = f"agreement {row['agreement']:.4f} < {threshold}"
        return row
    _phone_checks(job, path, fmt, probabilities, row)
    return row


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
    dataset = spec.dataset or (src.recipe or {}).get("dataset")
    if not dataset:
        raise ValueError("Which dataset? Pass ExportSpec(dataset=...) (--dataset): its training "
                         "images calibrate int8 and its test images verify every export.")
    model = formats.probabilities_model(src.model)
    data = inputs.load_data(dataset, formats.input_shape(model), spec, src)
    if model.output_shape[-1] != data.info.num_classes:
        raise ValueError(f"The model has {model.output_shape[-1]} outputs but {dataset!r} has "
                         f"{data.info.num_classes} classes: pick the dataset it was trained on.")
    version = spec.version or ((src.summary or {}).get("weights_sha256") or "")[:12] or "1"
    job = _Job(model, data, spec, tmp, dataset, (src.recipe or {}).get("name", "unknown"),
               version)
    job.reference = _predict(model, data.eval_inputs)
    job.keras_accuracy = float(np.mean(job.reference.argmax(-1) == data.eval_labels))
    if spec.frames:
        frames = data.frames.astype(np.float32)
        job.frame_reference = _predict(model, formats.frames_to_inputs(frames, data.view).numpy())
    if spec.mediapipe != "off":
        job.mediapipe = mediapipe_runtime.available()
        if job.mediapipe and spec.mediapipe == "on":
            raise ValueError(f"mediapipe='on' but {job.mediapipe}")
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
    return {"model": job.model.name, "source": src.path, "dataset": job.dataset,
            "split": data.split, "eval_images": len(data.eval_labels),
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
        rundir.atomic_write(os.path.join(tmp, "labels.txt"),
                            "".join(f"{n}\n" for n in job.data.info.class_names))
        rundir.write_json(os.path.join(tmp, "metadata.json"), {
            k: report[k] for k in ("model", "dataset", "view", "class_names", "frames")})
        rundir.write_json(os.path.join(tmp, "report.json"), report)
        for name in [r["file"] for r in rows if r["passed"]] + ["labels.txt", "metadata.json",
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
