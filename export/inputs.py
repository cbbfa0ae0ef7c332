"""What an export starts from: the model, and images seen exactly as training saw them.

`load_source` reads a Keras model, a `.keras` file or a run directory: the run's recipe as its
own type (`train.recipes.Recipe`) and, from summary.json, what export needs (`RunSummary`).
`load_data` takes the held-out images (the run's `test_split`) and the calibration images (its
`train_split`) through the run's evaluation view (`evaluation_view`, via `train.pipeline`), the
same function training evaluated with, so the Keras accuracy in an export report is training's
test accuracy on the same images. `train_stream` is the fine-tunes' stream of the same
`train_split`. A model without a run uses its dataset's 'train' and 'test'.
"""

import dataclasses
import os
from typing import NamedTuple

import keras
import numpy as np

from export import formats
from train import recipes, rundir, views

_TRANSFER_BATCH = 500


class RunSummary(NamedTuple):
    """What export reads from a run's summary.json: the weights' digest (the files' version)
    and the evaluation view training recorded (None in a summary written without one)."""

    weights_sha256: str | None
    view: views.View | None


def read_summary(run: rundir.RunDir) -> RunSummary | None:
    """The one reader of summary.json in export; None when the run has none."""
    if not os.path.isfile(run.summary):
        return None
    summary = run.read_summary()
    view = summary.get("view")
    return RunSummary(summary.get("weights_sha256"), views.View.from_dict(view) if view else None)


@dataclasses.dataclass(frozen=True)
class Source:
    """A float32 Keras model and, for a run directory, its recipe and summary."""

    model: keras.Model
    path: str | None = None
    recipe: recipes.Recipe | None = None
    summary: RunSummary | None = None

    @property
    def train_split(self) -> str:
        """The split the run trained on (calibration, fine-tunes); 'train' without a run."""
        return self.recipe.train_split if self.recipe else "train"

    @property
    def test_split(self) -> str:
        """The split the run was tested on (verification); 'test' without a run."""
        return self.recipe.test_split if self.recipe else "test"

    @property
    def folder_options(self) -> dict:
        """The run's folder rules as `train.data.load` keywords (bad images, held-out
        fraction: training's own, `train.session.folder_options`); {} without a run."""
        if not self.recipe:
            return {}
        from train import session

        return session.folder_options(self.recipe)


def load_source(source) -> Source:
    """A `Source` from a Keras model, a `.keras` file or a run directory of `python -m train`."""
    if isinstance(source, keras.Model):
        return Source(formats.as_float32(source))
    path = os.fspath(source)
    recipe = summary = None
    if os.path.isdir(path):
        run = rundir.RunDir(path)
        recipe, summary = run.read_recipe(), read_summary(run)
        if not os.path.isfile(run.model):
            raise ValueError(f"{path} is a directory without model.keras: pass a run "
                             "directory of `python -m train` (after training) or a .keras file.")
        path = os.path.join(path, "model.keras")
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


@dataclasses.dataclass(frozen=True)
class ExportData:
    """Held-out and calibration images of one dataset, through the model's evaluation view.

    dataset, split, train_split: where the images come from (the run's test and train splits).
    eval_inputs: float32 (N, H, W, C) model inputs (the view's output); eval_labels (N,).
    frames: uint8 RGB (N, h, w, 3): the same images as camera frames at the view's size before
        padding (gray images as three equal channels). raw: the test images as stored, in
        same-size groups [(indices, uint8 (n, h0, w0, C))], for the SavedModel's signature.
    calibration / calibration_frames: the same two forms of the first training images.
    augment: the fine-tunes' augmentation; folder_options: `Source.folder_options`.
    """

    info: object
    view: views.View
    split: str
    available: int
    eval_inputs: np.ndarray
    eval_labels: np.ndarray
    frames: np.ndarray
    raw: list
    calibration: np.ndarray
    calibration_frames: np.ndarray
    augment: str
    dataset: str
    train_split: str
    folder_options: dict

    @property
    def all_images(self) -> bool:
        return len(self.eval_labels) == self.available


def evaluation_view(train_info, source: Source, shape) -> views.View:
    """The model's evaluation view, from one place.

    A run: its recipe through training's own function (`train.views.for_recipe` over the
    training split's info), which must equal the view the run recorded in summary.json. A
    model without a run: its dataset's own view when that gives the model's input `shape`
    (H, W, C), else the dataset's view at the model's size.
    """
    if source.recipe:
        view = views.for_recipe(train_info, source.recipe)
        saved = source.summary.view if source.summary else None
        if saved is not None and saved != view:
            raise ValueError(
                f"{source.path}: training recorded the view {saved} but its recipe gives {view} "
                f"on {train_info.name} {train_info.split!r} now: the data changed since "
                "training. Export with the data the run was trained on.")
    else:
        fixed = None not in train_info.image_shape[:2]
        view = views.for_dataset(train_info, None, "none") if fixed else None
        if view is None or view.shape != tuple(shape):
            view = views.for_dataset(train_info, tuple(shape[:2]), "none")
    if view.shape != tuple(shape):
        raise ValueError(f"The model takes {tuple(shape)} but {train_info.name}'s view gives "
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


def _first(raw, info, n, view):
    """The first `n` examples of a split, prepared for evaluation through `view`."""
    from train import pipeline

    return pipeline.prepare(raw.take(n), dataclasses.replace(info, num_examples=n), view, "none")


def load_data(dataset, shape, spec, source: Source | None = None) -> ExportData:
    """Held-out (the run's test split, at most `spec.eval_images`) and calibration (the run's
    train split, at most `spec.calibration_images`) images of `dataset` for a model taking
    `shape` (H, W, C)."""
    from train import data, pipeline

    source = source or Source(model=None)
    options = source.folder_options
    train_raw, train_info = data.load(dataset, source.train_split, data_dir=spec.data_dir,
                                      **options)
    if train_info.image_shape[-1] not in (None, shape[-1]):
        raise ValueError(f"Dataset {dataset!r} has {train_info.image_shape[-1]}-channel images "
                         f"but the model takes {tuple(shape)}: pick the dataset the model was "
                         "trained on.")
    view = evaluation_view(train_info, source, shape)
    test_raw, info = data.load(dataset, source.test_split, data_dir=spec.data_dir, **options)
    available = int(info.num_examples)
    n = min(spec.eval_images, available)
    test = _first(test_raw, info, n, view)
    inputs, labels = pipeline.eval_arrays(test, _TRANSFER_BATCH)
    calib = _first(train_raw, train_info, min(spec.calibration_images,
                                              int(train_info.num_examples)), view)
    calibration, _ = pipeline.eval_arrays(calib, _TRANSFER_BATCH)
    augment = spec.augment or (source.recipe.augment if source.recipe else None) or "none"
    return ExportData(info, view, source.test_split, available, inputs, labels,
                      as_frames(_inner(test, view)), _raw_groups(test_raw, n), calibration,
                      as_frames(_inner(calib, view)), augment, dataset, source.train_split,
                      options)


def _inner(examples, view):
    """uint8 images at the view's size before padding (what a camera frame is resized to)."""
    from train import pipeline

    if examples.in_memory:
        return examples.images
    p = view.pad
    inputs, _ = pipeline.eval_arrays(examples)
    inner = inputs[:, p:inputs.shape[1] - p, p:inputs.shape[2] - p] if p else inputs
    return np.round(inner).astype(np.uint8)


def train_stream(data: ExportData, spec):
    """Augmented batches of float32 model inputs from the run's train split (`data`'s), for
    the QAT and pruning fine-tunes: an endless tf.data of (images (B, H, W, C), labels (B,))."""
    from train import data as data_lib
    from train import pipeline

    ds, info = data_lib.load(data.dataset, data.train_split, data_dir=spec.data_dir,
                             **data.folder_options)
    examples = pipeline.prepare(ds, info, data.view, data.augment)
    return pipeline.train_batches(examples, batch_size=spec.fine_tune_batch_size,
                                  augment=data.augment, seed=spec.seed, shuffle_buffer=5000)
