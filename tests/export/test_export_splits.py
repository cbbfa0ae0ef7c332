"""Export reads a run with the run's own types and splits: recipe.json as a `Recipe`,
summary.json as a `RunSummary`, calibration and fine-tunes from the recipe's `train_split`,
verification on exactly its `test_split`. The reference is Fashion-MNIST as TFDS stores it,
read whole with tensorflow_datasets and sliced with numpy (not through train.data)."""

import dataclasses
import importlib
import json
import os
import shutil

import numpy as np
import pytest

import export
from export import exporter, inputs
from export import spec as spec_lib
from train import recipes, rundir, views

TRAIN, TEST = slice(1000, 1100), slice(0, 150)  # the held-out images carved out first
TRAIN_SPLIT, TEST_SPLIT = "train[1000:1100]", "train[:150]"


@pytest.fixture(scope="module")
def tfds_arrays(fashion_dir):
    """{split: (uint8 images (N, 28, 28), labels (N,))} of fashion_mnist in TFDS's order."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("fashion_mnist", data_dir=fashion_dir)
    arrays = {}
    for split in ("train", "test"):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        images, labels = zip(*ds.batch(10_000).as_numpy_iterator())
        arrays[split] = np.concatenate(images)[..., 0], np.concatenate(labels)
    return arrays


@pytest.fixture(scope="module")
def sliced_run(run_dir, tmp_path_factory):
    """The session's trained ResNet-8 in a run directory whose recipe trains on
    train[1000:1100] and tests on train[:150] (no augmentation, so streams are exact)."""
    path = tmp_path_factory.mktemp("sliced_run")
    shutil.copy(os.path.join(run_dir, "model.keras"), path / "model.keras")
    recipe = rundir.RunDir(run_dir).read_recipe().replace(
        train_split=TRAIN_SPLIT, eval_split=TEST_SPLIT, test_split=TEST_SPLIT, augment="none")
    (path / "recipe.json").write_text(recipe.to_json())
    return str(path)


def _spec(fashion_dir, **overrides):
    return export.ExportSpec(**{**dict(data_dir=fashion_dir, eval_images=10_000,
                                       calibration_images=200, latency_runs=2, threads=(1, 2),
                                       mediapipe="off"), **overrides})


def test_calibration_and_verification_images_are_the_runs_own_splits(sliced_run, fashion_dir,
                                                                     tfds_arrays):
    source = export.load_source(sliced_run)
    assert isinstance(source.recipe, recipes.Recipe) and source.summary is None
    data = export.load_data("fashion_mnist", (32, 32, 1), _spec(fashion_dir), source)
    images, labels = tfds_arrays["train"]
    assert (data.split, data.train_split) == (TEST_SPLIT, TRAIN_SPLIT)
    assert data.all_images and data.available == 150
    np.testing.assert_array_equal(data.frames[..., 0], images[TEST])
    np.testing.assert_array_equal(data.eval_labels, labels[TEST])
    np.testing.assert_array_equal(data.eval_inputs[:, 2:-2, 2:-2, 0], images[TEST])
    # 200 asked for, the train split holds 100: all of them, none of the held-out ones
    np.testing.assert_array_equal(data.calibration_frames[..., 0], images[TRAIN])
    np.testing.assert_array_equal(data.calibration[:, 2:-2, 2:-2, 0], images[TRAIN])


def test_the_fine_tune_stream_reads_the_train_split_only(sliced_run, fashion_dir, tfds_arrays):
    spec = _spec(fashion_dir, fine_tune_batch_size=64)
    data = export.load_data("fashion_mnist", (32, 32, 1), spec, export.load_source(sliced_run))
    images, labels = tfds_arrays["train"]
    allowed = {x.tobytes(): y for x, y in zip(images[TRAIN], labels[TRAIN])}
    seen = set()
    for batch, batch_labels in inputs.train_stream(data, spec).take(4).as_numpy_iterator():
        assert batch.shape == (64, 32, 32, 1)
        for image, label in zip(batch, batch_labels):
            key = image[2:-2, 2:-2, 0].astype(np.uint8).tobytes()
            assert key in allowed and allowed[key] == label
            seen.add(key)
    assert len(seen) == 100  # 256 images: every one of the split's 100, none from elsewhere


def _export_recording_streams(run, out, spec, monkeypatch):
    """export.export's report, and the train split of every fine-tune stream it loaded."""
    calls = []
    real = inputs.train_stream

    def recording(data, spec):
        calls.append(data.train_split)
        return real(data, spec)

    monkeypatch.setattr(inputs, "train_stream", recording)
    return export.export(run, out, spec), calls


def _check_test_split(report, keras_model, tfds_arrays):
    assert (report["split"], report["train_split"]) == (TEST_SPLIT, TRAIN_SPLIT)
    assert report["eval_images"] == 150 and report["all_images"]
    images, labels = tfds_arrays["train"]
    padded = np.pad(images[TEST, ..., None].astype(np.float32), ((0, 0), (2, 2), (2, 2), (0, 0)))
    expected = np.mean(keras_model.predict(padded, verbose=0).argmax(-1) == labels[TEST])
    assert report["keras_accuracy"] == pytest.approx(expected, abs=1e-9)
    rows = {row["format"]: row for row in report["formats"]}
    assert all(row["passed"] and row["images"] == 150 for row in rows.values()), rows
    return rows


def test_export_verifies_on_the_test_split(sliced_run, fashion_dir, keras_model, tfds_arrays,
                                           tmp_path, monkeypatch):
    spec = _spec(fashion_dir, formats=("float32", "int8"), calibration_images=50)
    report, streams = _export_recording_streams(sliced_run, str(tmp_path), spec, monkeypatch)
    assert streams == []  # nothing fine-tuned: no training stream loaded
    _check_test_split(report, keras_model, tfds_arrays)


@pytest.mark.slow  # QAT and pruning, converted and verified: about 2 minutes on 2 busy cores
def test_fine_tuned_formats_share_one_stream_of_the_train_split(
        sliced_run, fashion_dir, keras_model, tfds_arrays, tmp_path, monkeypatch):
    spec = _spec(fashion_dir, formats=("float32", "pruned", "qat"), fine_tune_steps=2,
                 calibration_images=50)
    report, streams = _export_recording_streams(sliced_run, str(tmp_path), spec, monkeypatch)
    assert streams == [TRAIN_SPLIT]  # two fine-tuned formats, one stream
    rows = _check_test_split(report, keras_model, tfds_arrays)
    assert rows["pruned"]["zip_ratio"] > 1 and rows["qat"]["non_integer_ops"] == []


def test_the_run_summary_is_read_once_into_its_type(sliced_run, fashion_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sliced_run, run)
    view = views.View(32, 32, 1, "stretch", 2)
    (run / "summary.json").write_text(json.dumps({"weights_sha256": "ab" * 32,
                                                  "view": view.to_dict(), "steps": 1}))
    source = export.load_source(str(run))
    assert source.summary == inputs.RunSummary("ab" * 32, view)
    data = export.load_data("fashion_mnist", (32, 32, 1), _spec(fashion_dir, eval_images=4,
                                                                    calibration_images=1),
                            source)
    assert data.view == view
    # training recorded another view than its recipe gives now (data changed): refused
    (run / "summary.json").write_text(json.dumps({"view": dataclasses.replace(
        view, pad=0, height=28, width=28).to_dict()}))
    with pytest.raises(ValueError, match="training recorded the view"):
        export.load_data("fashion_mnist", (32, 32, 1), _spec(fashion_dir, eval_images=4),
                         export.load_source(str(run)))
    (run / "recipe.json").write_text(json.dumps({"dataset": "fashion_mnist", "colour": 1}))
    with pytest.raises(ValueError, match=r"recipe.json is not a recipe.*colour"):
        export.load_source(str(run))


def test_a_model_without_a_run_uses_its_datasets_train_and_test(keras_model, fashion_dir,
                                                                 tfds_arrays):
    source = export.load_source(keras_model)
    assert (source.recipe, source.train_split, source.test_split) == (None, "train", "test")
    data = export.load_data("fashion_mnist", (32, 32, 1),
                            _spec(fashion_dir, eval_images=5, calibration_images=3), source)
    assert data.view == views.View(32, 32, 1, "stretch", 2)  # the dataset's own, padded
    np.testing.assert_array_equal(data.frames[..., 0], tfds_arrays["test"][0][:5])
    np.testing.assert_array_equal(data.calibration_frames[..., 0], tfds_arrays["train"][0][:3])


def test_every_row_names_what_it_needs():
    assert set(exporter._WRITERS) == set(spec_lib.WRITERS)
    kinds = {row.source_input(frames) for row in spec_lib.FORMAT_TABLE if row.tflite
             for frames in (False, True)}
    assert kinds == set(export.formats.INPUTS)
    for row in spec_lib.FORMAT_TABLE:
        for step in (row.fine_tune, row.extra_report):
            if step is not None:  # names a function that exists
                assert callable(getattr(importlib.import_module(step.module), step.function))
    assert {r.name for r in spec_lib.FORMAT_TABLE if r.fine_tune} == {"qat", "pruned"}
    with pytest.raises(ValueError, match="writer 'coreml'"):
        spec_lib.Format("x", "x.mlmodel", writer="coreml")


def test_a_folder_without_a_test_split_is_held_out_by_the_runs_own_rule(tmp_path):
    """A tree ROOT/<class>/*.png: training holds `recipe.holdout` of each class out as 'test';
    export reads the same split (held-out count per class, and every image exactly once)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name in ("cats", "dogs"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 256, (8, 8, 3), np.uint8)
            Image.fromarray(image).save(tmp_path / "photos" / name / f"{i}.png")
            written[image.tobytes()] = name
    recipe = recipes.resolve("smoke", dataset=f"folder:{tmp_path / 'photos'}", augment="none",
                             holdout=0.5)
    data = export.load_data(recipe.dataset, (8, 8, 3), export.ExportSpec(calibration_images=100),
                            inputs.Source(None, recipe=recipe))
    assert np.bincount(data.eval_labels).tolist() == [3, 3]  # half of each class, not 20%
    seen = [x.tobytes() for x in np.concatenate([data.frames, data.calibration_frames])]
    assert sorted(seen) == sorted(written)  # test and calibration: disjoint, all of them
    names = data.info.class_names
    assert [written[x.tobytes()] for x in data.frames] == [names[y] for y in data.eval_labels]
