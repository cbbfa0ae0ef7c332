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

    from train import data, loop, recipes

    keras.utils.set_random_seed(0)
    recipe = recipes.resolve("smoke", model="resnet8", dataset="fashion_mnist", augment="none")
    ds, info = data.load("fashion_mnist", f"train[:{TRAIN_IMAGES}]", data_dir=fashion_dir)
    model = loop.build_model(recipe, info)
    for layer in model.layers:  # BN statistics settle within one short epoch
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train = data.pipeline(ds, info, training=True, batch_size=32, augment="none", seed=0,
                          repeat=False)
    model.fit(train, epochs=1, verbose=0)
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
    """(float32 raw images (N, 32, 32, 1), labels) of the first EVAL_IMAGES test images."""
    import export

    spec = export.ExportSpec(dataset="fashion_mnist", data_dir=fashion_dir,
                             eval_images=EVAL_IMAGES, calibration_images=8)
    data = export.load_data("fashion_mnist", (32, 32, 1), spec)
    return data.eval_images, data.eval_labels


@pytest.fixture(scope="session")
def exported(run_dir, fashion_dir, tmp_path_factory):
    """(out dir, report) of one export of the run in every format."""
    import export

    out = str(tmp_path_factory.mktemp("exported"))
    spec = export.ExportSpec(formats=export.FORMATS, data_dir=fashion_dir,
                             eval_images=EVAL_IMAGES, calibration_images=300,
                             fine_tune_steps=200, latency_runs=10)
    report = export.export(run_dir, out, spec)
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["formats"] == json.loads(json.dumps(report["formats"]))
    return out, {row["format"]: row for row in report["formats"]}, report


def to_uint8(images):
    return np.round(images).astype(np.uint8)
