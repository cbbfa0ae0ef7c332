"""Judge any file we write on a dataset, from the file alone: `python -m export.evaluate`.

    from export.evaluate import evaluate
    report = evaluate("exported/model_int8.tflite", "folder:~/photos", out_dir="eval/")

Each file (`.tflite`, `.onnx`, a SavedModel folder, a `.keras` file or run directory) is run
by its own runtime (`export.evaluate.runners`: LiteRT and, for frame files, MediaPipe's
ImageClassifier; ONNX Runtime; the SavedModel's `serving_default`; Keras), with its input size,
labels and input contract read from the file. The images are `train.data.load(dataset, split)`
in its fixed order, streamed in chunks, each resized by the file's own contract. A file whose
labels are not the dataset's class names (the same names in the same order) is refused.

The report (report.json in `out_dir`) has one row per file, in `export.verify.format_table`'s
keys (accuracy, top5_accuracy above 5 classes, agreement with a `reference` file, latency at
each thread count, size) plus its per-class table; `out_dir/<file name>/confusion.png` and
`mistakes.png` show where it errs (`train.confusion`).
"""

import os
import time

import numpy as np

MEDIAPIPE = ("auto", "on", "off")
_CHUNK = 500
_THUMBNAIL = 128  # mistakes.png shows images at most this many pixels on a side


def _check_labels(runner, info, dataset, split):
    file_labels, data_labels = tuple(runner.labels), tuple(info.class_names)
    if file_labels == data_labels:
        return
    how = ("the same names in another order" if sorted(file_labels) == sorted(data_labels)
           else "other classes")
    raise ValueError(
        f"{runner.path} and dataset {dataset!r} ({split}) have {how}.\n"
        f"  the file's labels ({len(file_labels)}): {list(file_labels)}\n"
        f"  the dataset's classes ({len(data_labels)}): {list(data_labels)}\n"
        "Evaluate a file on the dataset it was trained on (for a folder: one sub-folder per "
        "class, named as the file's labels).")


def _thumbnail(image):
    if max(image.shape[:2]) <= _THUMBNAIL:
        return image
    import tensorflow as tf

    small = tf.image.resize(image, (_THUMBNAIL, _THUMBNAIL), preserve_aspect_ratio=True,
                            antialias=True)
    return np.clip(np.round(small.numpy()), 0, 255).astype(np.uint8)


def _chunks(ds, n):
    """Lists of (uint8 image, label) of at most _CHUNK examples, the first n of `ds`."""
    chunk = []
    for image, label in ds.take(n).as_numpy_iterator():
        chunk.append((image, int(label)))
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _predict_chunk(runner, images):
    """Probabilities (n, classes) of a list of images of any sizes, fed by same-size groups."""
    out = None
    groups = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    for index in groups.values():
        p = runner.predict(np.stack([images[i] for i in index]))
        out = np.zeros((len(images), p.shape[-1]), np.float32) if out is None else out
        out[index] = p
    return out


class _MediaPipe:
    """MediaPipe's ImageClassifier on a frame .tflite, chunk by chunk: each image as a camera
    frame of its own size (the decoded photo, not our resize of it), with the file's view's
    region of interest (`train.views.region`: its centre crop); MediaPipe crops and resizes it
    to the input size itself, as it does on a phone."""

    def __init__(self, runner):
        from export import mediapipe_runtime

        self.runner, self.top1, self.names, self.sizes = runner, [], [], set()
        self.classifier = mediapipe_runtime.ImageClassifierRunner(runner.path)

    def add(self, images):
        from export.evaluate.runners import to_channels
        from train import views

        frames = [to_channels(image[None], 3)[0] for image in images]
        regions = [views.region(*f.shape[:2], self.runner.view) for f in frames]
        self.sizes.update(f"{f.shape[1]}x{f.shape[0]}" for f in frames)
        top1, names, _ = self.classifier.classify(frames, regions)
        self.top1 += [int(t) for t in top1]
        self.names += names

    def row(self, labels, litert, class_names):
        self.classifier.close()
        top1 = np.asarray(self.top1)
        sizes = sorted(self.sizes)
        return {"mediapipe": "ran", "mediapipe_frames": ", ".join(sizes[:4]) + (
                    f" ... ({len(sizes)} sizes)" if len(sizes) > 4 else ""),
                "mediapipe_accuracy": float(np.mean(top1 == labels)),
                "mediapipe_agreement": float(np.mean(top1 == litert.argmax(-1))),
                "mediapipe_names_ok": self.names == [class_names[i] for i in top1]}


def _mediapipe_for(runner, mediapipe):
    """A `_MediaPipe` for frame .tflite files when wanted and installed, else (None, why)."""
    from export import mediapipe_runtime

    if mediapipe == "off" or runner.kind != "tflite":
        return None, None
    if not runner.frames:
        return None, "skipped: the file takes the model's own input (exported with --noframes)"
    reason = mediapipe_runtime.available()
    if reason and mediapipe == "on":
        raise ValueError(f"mediapipe='on' but {reason}")
    if reason:
        return None, f"not run: {reason}"
    try:
        return _MediaPipe(runner), None
    except ValueError as e:  # MediaPipe refuses the file: say so in its row
        return None, f"refused: {e}"


def _row(runner, probabilities, labels, reference, latency, class_names):
    from export import verify

    row = {"format": runner.name, "file": runner.path, "kind": runner.kind,
           "runtime": runner.runtime, "size_bytes": runner.size_bytes,
           "input_dtype": runner.input, "images": int(len(labels)),
           "accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
           "latency_ms": latency}
    if len(class_names) >= verify.TOP5_MIN_CLASSES:
        row["top5_accuracy"] = verify.top5_accuracy(probabilities, labels)
    if reference is not None:
        row.update({k: v for k, v in verify.compare(probabilities, reference, labels).items()
                    if k != "images"})
    return row


def _errors(out_dir, runner, labels, probabilities, class_names, thumbnails):
    from train import confusion

    if out_dir is None:
        table = confusion.per_class_table(labels, probabilities.argmax(-1), class_names)
        return {"per_class": table}
    folder = os.path.join(out_dir, runner.name.replace(os.sep, "_"))
    report = confusion.write_error_report(folder, labels, probabilities, class_names, thumbnails)
    return {k: report[k] for k in ("per_class", "balanced_accuracy", "worst_class",
                                   "most_confused", "figures")}


def _open(paths, reference, info, dataset, split, labels, threads, mediapipe):
    from export.evaluate import runners

    opened = {}
    for path in [*paths, *([reference] if reference else [])]:
        key = os.path.abspath(os.fspath(path))
        if key not in opened:
            runner = runners.open_file(path, info=info, dataset=dataset, labels=labels,
                                       threads=threads)
            _check_labels(runner, info, dataset, split)
            judged = path in paths  # MediaPipe for the files judged, not for the reference
            opened[key] = [runner, [], *_mediapipe_for(runner, mediapipe if judged else "off")]
    return opened


def evaluate(paths, dataset, split="test", *, reference=None, data_dir=None, max_images=None,
             out_dir=None, labels=None, threads=(1, 2), latency_runs=50,
             mediapipe="auto") -> dict:
    """Runs each file of `paths` (one path or a list) on the first `max_images` (default: all)
    images of `train.data.load(dataset, split)` and returns the report (also written, with the
    pictures, into `out_dir` when given). `reference`: a file whose top-1 each file is compared
    with (agreement). `labels`: class names for a .keras file without them beside it.
    mediapipe: 'auto' runs MediaPipe on frame .tflite files when installed, 'on' requires it."""
    from train import data, rundir

    if mediapipe not in MEDIAPIPE:
        raise ValueError(f"mediapipe must be one of {MEDIAPIPE}; received {mediapipe!r}.")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("Pass at least one file to evaluate.")
    start = time.time()
    ds, info = data.load(dataset, split, data_dir=data_dir)
    available = int(info.num_examples)
    n = available if max_images is None else min(int(max_images), available)
    opened = _open(paths, reference, info, dataset, split, labels, threads, mediapipe)
    label_list, thumbnails, sample = [], [], None
    bar = _progbar(n * len(opened))
    for chunk in _chunks(ds, n):
        images = [image for image, _ in chunk]
        sample = images[0][None] if sample is None else sample
        label_list += [label for _, label in chunk]
        if out_dir is not None:  # only the mistakes grid uses them
            thumbnails += [_thumbnail(image) for image in images]
        for runner, outputs, media, _ in opened.values():
            outputs.append(_predict_chunk(runner, images))
            if media:
                media.add(images)
            bar.add(len(images))
    if sample is None:
        raise ValueError(f"{dataset!r} {split} holds no images.")
    labels_np = np.asarray(label_list, np.int64)
    probs = {key: np.concatenate(entry[1]) for key, entry in opened.items()}
    ref = probs[os.path.abspath(os.fspath(reference))] if reference else None
    rows = []
    for path in paths:
        key = os.path.abspath(os.fspath(path))
        runner, _, media, why = opened[key]
        latency = runner.latency_ms(threads, latency_runs, sample)
        row = _row(runner, probs[key], labels_np, ref, latency, info.class_names)
        if media:
            row.update(media.row(labels_np, probs[key], info.class_names))
        elif why:
            row["mediapipe"] = why
        row.update(_errors(out_dir, runner, labels_np, probs[key], info.class_names, thumbnails))
        rows.append(row)
    report = {"dataset": dataset, "split": split, "images": int(len(labels_np)),
              "available_images": available, "all_images": len(labels_np) == available,
              "class_names": list(info.class_names), "reference": reference and
              os.fspath(reference), "files": rows, "seconds": round(time.time() - start, 1)}
    if out_dir is not None:
        rundir.write_json(os.path.join(out_dir, "report.json"), report)
    return report


def _progbar(total):
    import keras

    return keras.utils.Progbar(total, unit_name="image", verbose=1)
