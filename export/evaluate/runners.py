"""One runner per file kind we write, each reading its input contract and labels from the file.

    runner = open_file("exported/model_int8.tflite")
    probabilities = runner.predict(images)   # uint8 (n, h, w, C) of one size -> (n, classes)

- `.tflite` frame files (batch 1, uint8 RGB at the metadata's size): LiteRT, the image resized
  to that size as an app's resizer does (`train.views.resize`, with the export's view from the
  metadata.json beside the file when there is one, else a stretch as MediaPipe does);
  files with the model's own batched float input (--noframes) need that metadata.json.
  Labels: the file's TFLite Metadata.
- `.onnx`: ONNX Runtime (`export.onnx_format.OnnxModel`); labels and view in the file.
- a SavedModel folder: its `serving_default` (uint8 images of any size, the view inside);
  labels: its assets/labels.txt.
- `.keras` (or a run directory): the view the run recorded (else the dataset's at the model's
  size); labels from labels.txt beside it, else the run's dataset's when that is the dataset
  evaluated, else the caller's.
"""

import json
import os

import numpy as np

from export.formats import LUMA
from train import rundir

_BATCH = 250


def to_channels(images, channels):
    """uint8 (n, h, w, 1|3|4) -> uint8 (n, h, w, channels) as an app's decoder delivers them:
    alpha dropped, gray repeated to RGB, RGB to gray by ITU-R 601 luma (rounded)."""
    images = images[..., :3] if images.shape[-1] == 4 else images
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, -1)
    return np.round(images.astype(np.float32) @ np.float32(LUMA))[..., None].astype(np.uint8)


def _median_ms(fn, runs, warmup=3):
    from export import verify

    return round(verify.median_ms(fn, runs, warmup), 3)


def _export_view(path):
    """The evaluation view in the export's metadata.json beside `path`, or None."""
    from train import views

    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "metadata.json")
    if not os.path.isfile(beside):
        return None
    with open(beside) as f:
        view = json.load(f).get("view")
    return views.View.from_dict(view) if view else None


class Runner:
    """A file and how to feed it. kind, runtime: what it is and what runs it; labels: its class
    names; input: its input contract in words; frames: whether MediaPipe can run it."""

    kind = runtime = input = ""
    frames = False

    def __init__(self, path):
        self.path = os.fspath(path)
        self.name = os.path.basename(os.path.normpath(self.path))
        self.labels = ()

    @property
    def size_bytes(self):
        from export.verify import dir_size

        return dir_size(self.path) if os.path.isdir(self.path) else os.path.getsize(self.path)

    def predict(self, images):
        """uint8 images (n, h, w, C) of one size -> float32 probabilities (n, classes)."""
        raise NotImplementedError

    def latency_ms(self, threads, runs, image):
        """{threads: median batch-1 ms} ('tf': TensorFlow's own thread pool) on `image`, uint8
        (1, h, w, C) as the dataset stores it (files of a fixed input size run zeros)."""
        raise NotImplementedError


class TFLiteRunner(Runner):
    kind, runtime = "tflite", "LiteRT"

    def __init__(self, path, threads=2):
        from export import tflite_metadata, verify
        from train import views

        super().__init__(path)
        self.model = verify.TFLiteModel(self.path, num_threads=threads)
        self.labels = tuple(tflite_metadata.read_metadata(self.path)["labels"])
        shape = self.model.input_shape
        self.frames = self.model.batch_signature == 1 and shape[-1] == 3
        beside = _export_view(self.path)
        if self.frames:  # the export's own resize when it is known, else a stretch
            self.view = beside if beside and beside.inner_size == shape[:2] else \
                views.View(shape[0], shape[1], 3)
            self.input = f"{self.model.input_dtype.name} RGB {shape[0]}x{shape[1]}"
        else:
            if beside is None or beside.shape != shape:
                raise ValueError(f"{self.path} takes the model's own input {shape} (exported "
                                 "with --noframes): keep the metadata.json written beside it, "
                                 "which holds its evaluation view.")
            self.view, self.input = beside, "float32 {}x{}x{}".format(*shape)

    def frames_of(self, images):
        """uint8 RGB frames at the file's size, as the file (and MediaPipe) is fed."""
        import dataclasses

        from train import views

        if self.view.resize == "stretch" and images.shape[1:3] == self.view.inner_size:
            return to_channels(images, 3)
        view = dataclasses.replace(self.view, channels=images.shape[-1])
        return to_channels(views.resize(images, view).numpy().astype(np.uint8), 3)

    def predict(self, images):
        if self.frames:
            return self.model.predict(self.frames_of(images).astype(np.float32))
        from train import views

        x = views.apply(to_channels(images, self.view.channels), self.view).numpy()
        return self.model.predict(x)

    def latency_ms(self, threads, runs, image=None):
        from export.verify import TFLiteModel

        return {str(n): round(TFLiteModel(self.path, num_threads=n).latency_ms(runs), 3)
                for n in threads}


class OnnxRunner(Runner):
    kind, runtime = "onnx", "ONNX Runtime"

    def __init__(self, path, threads=2):
        from export.onnx_format import OnnxModel

        super().__init__(path)
        self.model = OnnxModel(self.path, num_threads=threads)
        self.labels = self.model.labels
        h, w, _ = self.model.input_shape
        self.input = f"uint8 RGB {h}x{w}, any batch"

    def predict(self, images):
        return self.model.predict(images)

    def latency_ms(self, threads, runs, image=None):
        from export.onnx_format import OnnxModel

        return {str(n): round(OnnxModel(self.path, num_threads=n).latency_ms(runs), 3)
                for n in threads}


class SavedModelRunner(Runner):
    kind, runtime = "saved_model", "TF SavedModel"

    def __init__(self, path):
        import tensorflow as tf

        super().__init__(path)
        labels = os.path.join(self.path, "assets", "labels.txt")
        if not os.path.isfile(labels):
            raise ValueError(f"{self.path} has no assets/labels.txt: pass a SavedModel written "
                             "by `python -m export`.")
        self.labels = rundir.read_labels(labels)
        self.serve = tf.saved_model.load(self.path).signatures["serving_default"]
        (spec,) = tf.nest.flatten(self.serve.structured_input_signature)
        self.channels = int(spec.shape[-1])
        self.input = f"{spec.dtype.name} any size"

    def predict(self, images):
        import tensorflow as tf

        images = to_channels(images, self.channels)
        return np.concatenate([self.serve(images=tf.constant(images[i:i + _BATCH]))
                               ["probabilities"].numpy() for i in range(0, len(images), _BATCH)])

    def latency_ms(self, threads, runs, image=None):
        import tensorflow as tf

        one = tf.constant(to_channels(image, self.channels))
        return {"tf": _median_ms(lambda: self.serve(images=one), runs)}


class KerasRunner(Runner):
    kind, runtime = "keras", "Keras"

    def __init__(self, path, info, dataset, labels=None):
        import tensorflow as tf

        from export import formats, inputs

        super().__init__(path)
        run_dir = self.path if os.path.isdir(self.path) else os.path.dirname(
            os.path.abspath(self.path))
        is_run = os.path.isfile(os.path.join(run_dir, "recipe.json")) and (
            os.path.isdir(self.path) or os.path.basename(self.path) == "model.keras")
        source = inputs.load_source(run_dir if is_run else self.path)
        self.model = formats.probabilities_model(source.model)
        shape = formats.input_shape(self.model)
        recorded = getattr(source.summary, "view", None) if source.summary else None
        self.view = recorded or inputs.evaluation_view(info, source, shape)
        self.labels = self._labels(run_dir, source, info, dataset, labels)
        self.input = "float32 {}x{}x{}".format(*shape)
        self.file = os.path.join(run_dir, "model.keras") if os.path.isdir(self.path) \
            else self.path
        self._call = tf.function(lambda x: self.model(x, training=False))

    @property
    def size_bytes(self):
        return os.path.getsize(self.file)

    def _labels(self, run_dir, source, info, dataset, labels):
        beside = os.path.join(run_dir, "labels.txt")
        if os.path.isfile(beside):
            return rundir.read_labels(beside)
        recipe_dataset = getattr(source.recipe, "dataset", None)
        if recipe_dataset is not None and recipe_dataset == dataset:
            return tuple(info.class_names)
        if labels:
            return tuple(labels)
        raise ValueError(f"{self.path} holds no class names (no labels.txt beside it, and its "
                         f"run's dataset is {recipe_dataset!r}, not {dataset!r}): pass "
                         "--labels=FILE (one class name a line, in the model's output order).")

    def predict(self, images):
        from train import views

        x = views.apply(to_channels(images, self.view.channels), self.view)
        return np.concatenate([self._call(x[i:i + _BATCH]).numpy()
                               for i in range(0, len(x), _BATCH)]).astype(np.float32)

    def latency_ms(self, threads, runs, image=None):
        from train import views

        one = views.apply(to_channels(image, self.view.channels), self.view)
        return {"tf": _median_ms(lambda: self._call(one), runs)}


def open_file(path, *, info=None, dataset=None, labels=None, threads=(1, 2)):
    """The runner of `path` by what it is: .tflite, .onnx, a SavedModel folder, a .keras file
    or a run directory (`info`/`dataset`: the dataset evaluated, for a .keras file's view and
    labels; `labels`: class names for a .keras file that has none)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist: pass a .tflite, .onnx or .keras file, a "
                         "SavedModel folder or a run directory.")
    lower = path.lower()
    if lower.endswith(".tflite"):
        return TFLiteRunner(path, max(threads))
    if lower.endswith(".onnx"):
        return OnnxRunner(path, max(threads))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelRunner(path)
    if lower.endswith(".keras") or os.path.isfile(os.path.join(path, "model.keras")):
        return KerasRunner(path, info, dataset, labels)
    raise ValueError(f"{path} is not a file evaluate knows: expected a .tflite, .onnx or "
                     ".keras file, a SavedModel folder (saved_model.pb) or a run directory "
                     "(model.keras).")
