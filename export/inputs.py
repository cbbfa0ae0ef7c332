"""What an export starts from: the model, and images seen exactly as training saw them.

`load_source` reads a Keras model, a `.keras` file or a run directory (with its recipe and
summary). `load_data` takes the held-out and calibration images through the run's evaluation
view (`train.views`, via `train.pipeline`), the same function training evaluated with, so the
Keras accuracy in an export report is training's test accuracy on the same images.
"""

import dataclasses
import json
import os

import keras
import numpy as np

from export import formats

_TRANSFER_BATCH = 500


@dataclasses.dataclass
class Source:
    """A float32 Keras model and, for a run directory, its recipe and summary (dicts)."""

    model: keras.Model
    path: str | None = None
    recipe: dict | None = None
    summary: dict | None = None


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_source(source) -> Source:
    """A `Source` from a Keras model, a `.keras` file or a run directory of `python -m train`."""
    if isinstance(source, keras.Model):
        return Source(formats.as_float32(source))
    path = os.fspath(source)
    recipe = summary = None
    if os.path.isdir(path):
        run_dir, path = path, os.path.join(path, "model.keras")
        recipe = _read_json(os.path.join(run_dir, "recipe.json"))
        summary = _read_json(os.path.join(run_dir, "summary.json"))
        if not os.path.isfile(path):
            raise ValueError(f"{run_dir} is a directory without model.keras: pass a run "
                             "directory of `python -m train` (after training) or a .keras file.")
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist: pass a .keras model file or a run directory.")
    import keras_resnet  # noqa: F401  (registers the custom layers for loading)

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many kinds for a file that is no model
        raise ValueError(f"{path} is not a Keras model ({type(e).__name__}: {e}). Pass a .keras "
                         "file saved by model.save() or a run directory holding model.keras.") \
            from None
    return Source(formats.as_float32(model), os.fspath(source), recipe, summary)


@dataclasses.dataclass
class ExportData:
    """Held-out and calibration images of one dataset, through the model's evaluation view.

    eval_inputs: float32 (N, H, W, C) model inputs (the view's output); eval_labels (N,).
    frames: uint8 RGB (N, h, w, 3): the same images as camera frames at the view's size before
        padding (gray images as three equal channels). raw: the test images as stored, in
        same-size groups [(indices, uint8 (n, h0, w0, C))], for the SavedModel's signature.
    calibration / calibration_frames: the same two forms of training images.
    """

    info: object
    view: object
    split: str
    available: int
    eval_inputs: np.ndarray
    eval_labels: np.ndarray
    frames: np.ndarray
    raw: list
    calibration: np.ndarray
    calibration_frames: np.ndarray
    augment: str

    @property
    def all_images(self) -> bool:
        return len(self.eval_labels) == self.available


def view_for(info, source: Source, shape):
    """The run's view (summary.json, else its recipe), or the dataset's for the model's size."""
    from train import views

    if source.summary and source.summary.get("view"):
        view = views.View.from_dict(source.summary["view"])
    elif source.recipe:
        view = views.for_dataset(info, source.recipe.get("image_size"),
                                 source.recipe.get("augment", "cifar"))
    else:
        view = views.for_dataset(info, None, "none") if None not in info.image_shape[:2] \
            else None
        if view is None or view.shape != tuple(shape):
            view = views.for_dataset(info, tuple(shape[:2]), "none")
    if view.shape != tuple(shape):
        raise ValueError(f"The model takes {tuple(shape)} but {info.name}'s view gives "
                         f"{view.shape}: pick the dataset (and size) it was trained on.")
    return view


def as_frames(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, C) -> uint8 RGB (N, h, w, 3): a gray channel repeated three times."""
    if images_uint8.shape[-1] == 3:
        return images_uint8
    return np.repeat(images_uint8, 3, axis=-1)


def _raw_groups(raw_ds, n):
    groups = {}
    for i, (image, _) in enumerate(raw_ds.take(n).as_numpy_iterator()):
        groups.setdefault(image.shape, ([], []))
        groups[image.shape][0].append(i)
        groups[image.shape][1].append(image)
    return [(np.array(idx), np.stack(imgs)) for idx, imgs in groups.values()]


def load_data(dataset, shape, spec, source: Source | None = None) -> ExportData:
    """Held-out (the run's test split, at most `spec.eval_images`) and calibration images of
    `dataset` for a model taking `shape` (H, W, C)."""
    from train import data, pipeline

    source = source or Source(model=None)
    recipe = source.recipe or {}
    split = recipe.get("test_split", "test")
    test_raw, info = data.load(dataset, split, data_dir=spec.data_dir)
    if info.image_shape[-1] not in (None, shape[-1]):
        raise ValueError(f"Dataset {dataset!r} has {info.image_shape[-1]}-channel images but the "
                         f"model takes {tuple(shape)}: pick the dataset the model was trained on.")
    view = view_for(info, source, shape)
    available = int(info.num_examples)
    n = min(spec.eval_images, available)
    test = pipeline.prepare(test_raw.take(n), dataclasses.replace(info, num_examples=n), view,
                            "none")
    inputs, labels = pipeline.eval_arrays(test, _TRANSFER_BATCH)
    train_raw, train_info = data.load(dataset, "train", data_dir=spec.data_dir)
    m = min(spec.calibration_images, int(train_info.num_examples))
    calib = pipeline.prepare(train_raw.take(m), dataclasses.replace(train_info, num_examples=m),
                             view, "none")
    calibration, _ = pipeline.eval_arrays(calib, _TRANSFER_BATCH)
    augment = spec.augment or recipe.get("augment") or "none"
    return ExportData(info, view, split, available, inputs, labels,
                      as_frames(_inner(test, view)), _raw_groups(test_raw, n), calibration,
                      as_frames(_inner(calib, view)), augment)


def _inner(examples, view):
    """uint8 images at the view's size before padding (what a camera frame is resized to)."""
    from train import pipeline

    if examples.in_memory:
        return examples.images
    p = view.pad
    inputs, _ = pipeline.eval_arrays(examples)
    inner = inputs[:, p:inputs.shape[1] - p, p:inputs.shape[2] - p] if p else inputs
    return np.round(inner).astype(np.uint8)


def train_stream(dataset, view, spec, augment):
    """Augmented training batches of float32 model inputs, for QAT and pruning fine-tunes."""
    from train import data, pipeline

    ds, info = data.load(dataset, "train", data_dir=spec.data_dir)
    examples = pipeline.prepare(ds, info, view, augment)
    return pipeline.train_batches(examples, batch_size=spec.fine_tune_batch_size,
                                  augment=augment, seed=spec.seed, shuffle_buffer=5000)
