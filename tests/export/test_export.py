"""export/ on a ResNet-8 trained on real Fashion-MNIST: every format converts, runs in LiteRT on
camera frames, keeps its accuracy; files appear only after verification; the SavedModel applies
the training view; bad input and the CLIs. TFLite Metadata and MediaPipe:
test_export_metadata.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export
from export import formats, tflite_metadata, verify
from export.predict import Classifier
from tests.export.conftest import EVAL_IMAGES, to_uint8

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_trained_model_is_good_enough(exported):
    _, _, report = exported
    assert report["eval_images"] == EVAL_IMAGES and not report["all_images"]
    assert report["keras_accuracy"] >= 0.78, report["keras_accuracy"]


def test_every_format_converts_loads_and_predicts(exported, held_out):
    out, rows, report = exported
    labels_txt = open(os.path.join(out, "labels.txt")).read().splitlines()
    assert labels_txt == report["class_names"] and len(labels_txt) == 10
    meta = json.load(open(os.path.join(out, "metadata.json")))
    assert meta["view"]["height"] == 32 and meta["view"]["pad"] == 2 and meta["frames"]
    for fmt, row in rows.items():
        assert row["passed"], row
        path = os.path.join(out, export.FILES[fmt])
        assert os.path.exists(path), fmt
        if fmt == "saved_model":
            probabilities = Classifier(path)(to_uint8(held_out.eval_inputs[0, 2:-2, 2:-2]))[None]
        else:
            model = export.TFLiteModel(path)
            assert model.input_shape == (28, 28, 3) and model.input_dtype == np.uint8, fmt
            probabilities = model.predict(held_out.frames[:20])
            assert row["latency_ms"]["1"] > 0 and row["latency_ms"]["2"] > 0
        assert probabilities.shape[1] == 10
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=0.02)
    assert not [f for f in os.listdir(out) if f.startswith(".")], "temporary files left behind"


def test_float32_tflite_matches_keras_on_the_same_frames(exported, keras_model, held_out):
    out, rows, _ = exported
    assert rows["float32"]["agreement"] == 1.0
    tflite = export.TFLiteModel(os.path.join(out, "model_float32.tflite"))
    frames = held_out.frames[:200].astype(np.float32)
    expected = keras_model(formats.frames_to_inputs(frames, held_out.view)).numpy()
    # Probabilities in [0, 1]; float32 convolutions summed in another order differ by ~1e-6
    # (measured max 3e-6 with oneDNN and with Eigen kernels).
    np.testing.assert_allclose(tflite.predict(frames), expected, atol=1e-4)


def test_frames_are_the_training_view(keras_model, held_out):
    """A gray image as RGB frame, converted inside the graph (ITU-R 601 luma, weights summing
    to 1) and padded, is the training view's input. Tolerance: three float32 products and two
    sums of values <= 255 round by at most a few ulp(255) = 1.5e-5 each (bound 6e-5)."""
    frames = held_out.frames[:50].astype(np.float32)
    inputs = formats.frames_to_inputs(frames, held_out.view).numpy()
    np.testing.assert_allclose(inputs, held_out.eval_inputs[:50], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.round(inputs), held_out.eval_inputs[:50])


def test_quantized_formats_keep_accuracy(exported):
    _, rows, report = exported
    float_accuracy = report["keras_accuracy"]
    for fmt in ("int8", "int8_io"):
        assert rows[fmt]["images"] == EVAL_IMAGES
        # 1 point = 10 of the 1000 images; measured 0.1-0.4 points on this model.
        assert abs(rows[fmt]["accuracy"] - float_accuracy) <= 0.01, rows[fmt]
    assert rows["float16"]["agreement"] >= 0.99
    assert rows["dynamic"]["agreement"] >= 0.98


def test_qat_is_at_least_as_accurate_as_post_training_int8(exported):
    _, rows, _ = exported
    assert rows["qat"]["accuracy"] >= rows["int8"]["accuracy"], (rows["qat"], rows["int8"])


def test_integer_models_have_only_integer_ops_and_take_pixels_as_they_come(exported):
    out, rows, _ = exported
    for fmt in ("int8", "int8_io", "qat"):
        assert rows[fmt]["non_integer_ops"] == [], rows[fmt]
        model = export.TFLiteModel(os.path.join(out, export.FILES[fmt]))
        # uint8 frames with scale 1 and zero point 0: the input values are the pixels.
        assert model.input_dtype == np.uint8 and model.input_quantization == (1.0, 0), fmt
    assert export.TFLiteModel(os.path.join(out, "model_int8_io.tflite")).output_dtype == np.uint8


def test_every_format_shows_where_it_errs(exported, held_out):
    """Pictures and per-class table per format, from verification's own probabilities: the
    recall, precision and support counted here from LiteRT's predictions (same file, same
    frames, same thread count: XNNPACK gives the same top-1) equal the report's."""
    from PIL import Image

    out, rows, report = exported
    for fmt, row in rows.items():
        for name in ("confusion", "mistakes"):
            path = os.path.join(out, "errors", fmt, f"{name}.png")
            assert row["figures"][name] == os.path.join("errors", fmt, f"{name}.png")
            with Image.open(path) as image:  # a PNG that is not one flat colour
                assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 0
        assert row["top5_accuracy"] >= row["accuracy"]  # 10 classes: a top-5 column
    assert "top-5" in verify.format_table(report["formats"]).splitlines()[0]
    labels = held_out.eval_labels
    for fmt in ("float32", "int8"):
        model = export.TFLiteModel(os.path.join(out, export.FILES[fmt]), num_threads=2)
        predicted = model.predict(held_out.frames.astype(np.float32)).argmax(-1)
        for c, entry in enumerate(rows[fmt]["per_class"]):
            hits = np.sum((predicted == c) & (labels == c))
            assert entry["class"] == report["class_names"][c]
            assert entry["support"] == np.sum(labels == c)
            assert entry["recall"] == hits / np.sum(labels == c), (fmt, entry)
            assert entry["precision"] == hits / max(np.sum(predicted == c), 1), (fmt, entry)


def test_non_integer_ops_are_named(exported):
    out, _, _ = exported
    names = formats.non_integer_ops(open(os.path.join(out, "model_float32.tflite"), "rb").read())
    assert any(name.startswith("CONV_2D (float32") for name in names)


# ------------------------------------------------------------------------- SavedModel


def test_saved_model_classifies_uint8_images_of_any_size(exported, keras_model, held_out):
    out, rows, _ = exported
    assert rows["saved_model"]["agreement"] == 1.0
    images, labels = held_out.eval_inputs[:300], held_out.eval_labels[:300]
    serve = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"]
    native = to_uint8(images[:, 2:-2, 2:-2])  # Fashion-MNIST as it comes: 28x28
    expected = keras_model.predict(images, verbose=0)
    result = serve(images=tf.constant(native))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(result["class_ids"].numpy(), expected.argmax(-1))
    for size in (20, 56, 100):
        resized = to_uint8(tf.image.resize(native, (size, size)).numpy())
        accuracy = np.mean(serve(images=tf.constant(resized))["class_ids"].numpy() == labels)
        assert accuracy >= 0.6, (size, accuracy)
    rectangular = to_uint8(tf.image.resize(native, (40, 30)).numpy())
    assert serve(images=tf.constant(rectangular))["probabilities"].shape == (300, 10)


def test_training_export_and_serving_see_the_same_input(run_dir, fashion_dir, held_out,
                                                        tmp_path):
    """The one evaluation view: training's evaluation pipeline, export's verification data and
    the SavedModel's serving function make the same input tensor from the same image. The
    SavedModel is of a model that returns softmax(x / 255) of its input, so log-probabilities
    give its input back (up to a constant)."""
    import keras

    from train import data, pipeline

    ds, info = data.load("fashion_mnist", "test[:64]", data_dir=fashion_dir)
    training = pipeline.eval_arrays(pipeline.prepare(ds, info, held_out.view, "none"))[0]
    np.testing.assert_array_equal(training, held_out.eval_inputs[:64])
    probe = keras.Sequential([keras.Input(held_out.view.shape), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Softmax()])
    formats.saved_model(probe, str(tmp_path / "probe"), held_out.view, info.class_names)
    serve = tf.saved_model.load(str(tmp_path / "probe")).signatures["serving_default"]
    raw = np.stack([x for x, _ in ds.as_numpy_iterator()])
    logp = np.log(serve(images=tf.constant(raw))["probabilities"].numpy().astype(np.float64))
    seen = 255 * (logp - logp[:, :1] + training.reshape(64, -1)[:, :1] / 255)
    # softmax then log in float32: ~1e-6 relative to the largest logit, 255 * 2e-6 pixel units.
    np.testing.assert_allclose(seen.reshape(training.shape), training, atol=2e-3)


def test_pruned_model_zips_at_least_twice_smaller(exported):
    _, rows, _ = exported
    pruned = rows["pruned"]
    assert abs(pruned["sparsity"] - 0.75) < 0.01, pruned["sparsity"]
    assert pruned["zip_ratio"] >= 2.0, pruned


def test_failed_verification_leaves_no_model_file(run_dir, fashion_dir, tmp_path):
    spec = export.ExportSpec(formats=("float32", "int8"), data_dir=fashion_dir,
                             eval_images=EVAL_IMAGES, calibration_images=50,
                             min_agreement_int8=1.0, latency_runs=2)
    with pytest.raises(export.VerificationError, match=r"int8 \(agreement 0\.\d+ < 1\.0\)"):
        export.export(run_dir, str(tmp_path), spec)
    assert sorted(os.listdir(tmp_path)) == ["errors", "labels.txt", "metadata.json",
                                            "model_float32.tflite", "report.json"]
    assert os.listdir(tmp_path / "errors") == ["float32"]  # no pictures of a failed file
    report = json.load(open(tmp_path / "report.json"))
    assert [r["passed"] for r in report["formats"]] == [True, False]


def test_an_error_in_one_format_fails_that_format_only(run_dir, fashion_dir, tmp_path,
                                                       monkeypatch):
    from export import exporter

    real = tflite_metadata.add_metadata

    def refuse_float16(content, card):  # as a converter or metadata writer error would
        if "format float16" in card.description:
            raise ValueError("no metadata for you")
        return real(content, card)

    monkeypatch.setattr(exporter.tflite_metadata, "add_metadata", refuse_float16)
    spec = export.ExportSpec(formats=("float16", "float32"), data_dir=fashion_dir,
                             eval_images=200, latency_runs=2)
    with pytest.raises(export.VerificationError, match=r"float16 \(ValueError: no metadata"):
        export.export(run_dir, str(tmp_path), spec)
    assert (tmp_path / "model_float32.tflite").exists()  # the format after it still shipped
    assert not (tmp_path / "model_float16.tflite").exists()


# --------------------------------------------------------------------------- bad input


def test_a_path_that_is_no_model(tmp_path):
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    with pytest.raises(ValueError, match="notes.keras is not a Keras model"):
        export.export(str(not_a_model), str(tmp_path / "out"),
                      export.ExportSpec(dataset="fashion_mnist"))
    with pytest.raises(ValueError, match="does not exist"):
        export.load_source(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="without model.keras"):
        export.load_source(str(tmp_path))


def test_an_unknown_format():
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) \['int4'\]"):
        export.ExportSpec(formats=("float32", "int4"))
    with pytest.raises(ValueError, match="io_dtype"):
        export.ExportSpec(io_dtype="int16")
    with pytest.raises(ValueError, match="mediapipe"):
        export.ExportSpec(mediapipe="maybe")


def test_a_representative_dataset_of_the_wrong_shape(keras_model):
    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 1\).*\(4, 28, 28, 1\)"):
        formats.convert_model(keras_model, "int8", np.zeros((4, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="representative dataset"):
        formats.convert_model(keras_model, "int8", np.zeros((0, 32, 32, 1), np.float32))


def test_a_truncated_tflite_file(exported, tmp_path):
    out, _, _ = exported
    content = open(os.path.join(out, "model_int8.tflite"), "rb").read()
    truncated = tmp_path / "model.tflite"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="not a valid TFLite model"):
        export.TFLiteModel(str(truncated))
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ValueError, match="not a TFLite model"):
        export.TFLiteModel(str(tmp_path / "empty.tflite"))


# ---------------------------------------------------------------------------------- CLIs


def _run(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_predict_cli_reads_class_names_from_the_file(exported, held_out, tmp_path):
    from PIL import Image

    out, _, report = exported
    images, labels = held_out.eval_inputs, held_out.eval_labels
    paths = []
    for i in range(3):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(to_uint8(images[i, 2:-2, 2:-2, 0])).save(path)
        paths.append(str(path))
    alone = tmp_path / "alone"  # the .tflite alone: no labels.txt, no metadata.json beside it
    alone.mkdir()
    model = alone / "model.tflite"
    model.write_bytes(open(os.path.join(out, "model_int8_io.tflite"), "rb").read())
    result = _run("-m", "export.predict", str(model), *paths)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 3
    classifier = Classifier(str(model))
    assert classifier.class_names == report["class_names"]
    for line, path in zip(lines, paths):
        best = classifier.top_k(np.asarray(Image.open(path))[..., None], 1)[0][0]
        assert line.split(": ", 1)[1].startswith(best)
    names = report["class_names"]
    assert sum(Classifier(os.path.join(out, "saved_model")).top_k(
        to_uint8(images[i, 2:-2, 2:-2]), 1)[0][0] == names[labels[i]] for i in range(3)) >= 2
    bad = _run("-m", "export.predict", os.path.join(out, "model_int8.tflite"), str(tmp_path))
    assert bad.returncode == 2 and "is not a file" in bad.stderr


def test_export_cli_on_a_run_directory(run_dir, fashion_dir, tmp_path):
    out = tmp_path / "cli"
    result = _run("-m", "export", f"--run_dir={run_dir}", f"--out={out}", "--formats=float16",
                  f"--data_dir={fashion_dir}", "--eval_images=200", "--latency_runs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float16" in result.stdout and "MediaPipe" in result.stdout
    assert "oneDNN" not in result.stderr and "I0000" not in result.stderr  # a quiet terminal
    assert (out / "native.log").read_text().startswith("# keras-resnet native log: pid ")
    assert (out / "model_float16.tflite").exists()
    assert json.load(open(out / "metadata.json"))["dataset"] == "fashion_mnist"  # from recipe
    bad = _run("-m", "export", f"--run_dir={run_dir}", f"--out={out}", "--formats=float64")
    assert bad.returncode == 2 and "float64" in bad.stderr


def test_a_mixed_precision_model_is_exported_in_float32(tmp_path):
    import keras

    import keras_resnet

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_resnet.ResNet(8, cifar=True, weights=None, input_shape=(32, 32, 1),
                                    classes=10)
    finally:
        keras.config.set_dtype_policy("float32")
    model.save(str(tmp_path / "mixed.keras"))
    source = export.load_source(str(tmp_path / "mixed.keras"))
    assert source.recipe is None
    loaded = source.model
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    # bfloat16 keeps 8 significant bits: outputs of order 1 differ by up to ~1e-2.
    np.testing.assert_allclose(loaded(images).numpy(), np.asarray(model(images), np.float32),
                               atol=0.02)
