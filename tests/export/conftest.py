"""Shared fixtures of the export/ tests: a small ResNet trained on real Fashion-MNIST, exported
once per session in every format."""

import json
import os

import numpy as np
import pytest

TRAIN_IMAGES = 16_000  # one epoch of these reaches ~80% test accuracy with ResNet-8
EVAL_IMAGES = 1000  # "within 1 point" needs at least 1000 held-out images


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, fashion_dir):
    """A run directory (model.keras, recipe.json) of ResNet-8 (train.loop.build_model: raw
    pixels in, mean subtraction inside) fitted for one epoch on 16k Fashion-MNIST images."""
    import keras

    from train import data, pipeline, recipes, views
    from train import model as model_lib

    keras.utils.set_random_seed(0)
    recipe = recipes.resolve("smoke", model="resnet8", dataset="fashion_mnist", augment="none",
                             bn_momentum=0.9)
    ds, info = data.load("fashion_mnist", f"train[:{TRAIN_IMAGES}]", data_dir=fashion_dir)
    view = views.for_dataset(info)
    examples = pipeline.prepare(ds, info, view, "none")
    model = model_lib.build_model(recipe, view, data.normalization(info, view, examples.images),
                                  info.num_classes).model
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train = pipeline.train_batches(examples, batch_size=32, augment="none", seed=0)
    model.fit(train, epochs=1, steps_per_epoch=TRAIN_IMAGES // 32, verbose=0)
    path = tmp_path_factory.mktemp("run")
    model.save(str(path / "model.keras"))
    (path / "recipe.json").write_text(recipe.to_json())
    return str(path)


@pytest.fixture(scope="session")
def keras_model(run_dir):
    import keras

    import keras_resnet  # noqa: F401  (custom layers)

    return keras.saving.load_model(os.path.join(run_dir, "model.keras"))


@pytest.fixture(scope="session")
def held_out(run_dir, fashion_dir):
    """The export's data of the first EVAL_IMAGES test images (`export.ExportData`: model
    inputs (N, 32, 32, 1), labels, uint8 RGB frames (N, 28, 28, 3), ...)."""
    import export

    spec = export.ExportSpec(dataset="fashion_mnist", data_dir=fashion_dir,
                             eval_images=EVAL_IMAGES, calibration_images=8)
    return export.load_data("fashion_mnist", (32, 32, 1), spec, export.load_source(run_dir))


@pytest.fixture(scope="session")
def exported(run_dir, fashion_dir, tmp_path_factory):
    """(out dir, {format: report row}, report) of one export of the run in every format."""
    import export

    out = str(tmp_path_factory.mktemp("exported"))
    # every format but ONNX, which needs onnxruntime and tf2onnx (test_export_onnx.py)
    formats = tuple(f for f, row in export.FORMATS.items() if row.writer != "onnx")
    spec = export.ExportSpec(formats=formats, data_dir=fashion_dir,
                             eval_images=EVAL_IMAGES, calibration_images=300,
                             fine_tune_steps=200, latency_runs=10)
    report = export.export(run_dir, out, spec)
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["formats"] == json.loads(json.dumps(report["formats"]))
    return out, {row["format"]: row for row in report["formats"]}, report


def to_uint8(images):
    return np.round(images).astype(np.uint8)
