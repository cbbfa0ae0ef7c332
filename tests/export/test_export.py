"""export/ on a ResNet-8 trained on real Fashion-MNIST: every format converts, loads, predicts
and keeps its accuracy; files appear only after verification."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export
from export import formats
from export.predict import Classifier
from tests.export.conftest import EVAL_IMAGES, to_uint8

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_trained_model_is_good_enough(exported):
    _, _, report = exported
    assert report["eval_images"] >= 1000
    assert report["keras_accuracy"] >= 0.78, report["keras_accuracy"]


def test_every_format_converts_loads_and_predicts(exported, held_out):
    out, rows, _ = exported
    images, labels = held_out
    meta = json.load(open(os.path.join(out, "metadata.json")))
    labels_txt = open(os.path.join(out, "labels.txt")).read().splitlines()
    assert labels_txt == meta["class_names"] and len(labels_txt) == 10
    assert meta["input"]["height"] == 32 and meta["input"]["pad"] == 2
    assert meta["preprocessing"]["inside_model"]
    for fmt, row in rows.items():
        assert row["passed"], row
        path = os.path.join(out, export.FILES[fmt])
        assert os.path.exists(path), fmt
        assert export.FILES[fmt] in meta["models"], fmt
        if fmt == "saved_model":
            probabilities = Classifier(path)(to_uint8(images[0, 2:-2, 2:-2]))[None]
        else:
            probabilities = export.TFLiteModel(path).predict(images[:20])
            assert row["latency_ms"]["1"] > 0 and row["latency_ms"]["2"] > 0
        assert probabilities.shape[1] == 10
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=0.02)
    assert not [f for f in os.listdir(out) if f.startswith(".")], "temporary files left behind"


def test_float32_tflite_matches_keras(exported, keras_model, held_out):
    out, rows, _ = exported
    images, _ = held_out
    assert rows["float32"]["agreement"] == 1.0
    assert rows["float32"]["max_abs_diff"] < 1e-4
    tflite = export.TFLiteModel(os.path.join(out, "model_float32.tflite"))
    expected = keras_model.predict(images[:200], verbose=0)
    np.testing.assert_allclose(tflite.predict(images[:200]), expected, atol=1e-4)


def test_quantized_formats_keep_accuracy(exported):
    _, rows, report = exported
    float_accuracy = report["keras_accuracy"]
    for fmt in ("int8", "int8_io"):
        assert rows[fmt]["images"] >= 1000
        assert abs(rows[fmt]["accuracy"] - float_accuracy) <= 0.01, rows[fmt]
    assert rows["float16"]["agreement"] >= 0.99
    assert rows["dynamic"]["agreement"] >= 0.98


def test_qat_is_at_least_as_accurate_as_post_training_int8(exported):
    _, rows, _ = exported
    assert rows["qat"]["accuracy"] >= rows["int8"]["accuracy"], (rows["qat"], rows["int8"])


def test_integer_models_have_only_integer_ops(exported):
    out, rows, _ = exported
    for fmt in ("int8", "int8_io", "qat"):
        assert rows[fmt]["non_integer_ops"] == [], rows[fmt]
    int8_io = export.TFLiteModel(os.path.join(out, "model_int8_io.tflite"))
    assert int8_io.input_dtype == np.uint8 and int8_io.output_dtype == np.uint8
    # Raw pixels are already uint8: the input quantization is the identity.
    assert int8_io.input_quantization == (1.0, 0)


def test_non_integer_ops_are_named(exported):
    out, _, _ = exported
    names = formats.non_integer_ops(open(os.path.join(out, "model_float32.tflite"), "rb").read())
    assert any(name.startswith("CONV_2D (float32") for name in names)


def test_saved_model_classifies_uint8_images_of_any_size(exported, keras_model, held_out):
    out, _, _ = exported
    images, labels = held_out
    images, labels = images[:300], labels[:300]
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
    assert sorted(os.listdir(tmp_path)) == ["labels.txt", "metadata.json",
                                            "model_float32.tflite", "report.json"]
    report = json.load(open(tmp_path / "report.json"))
    assert [r["passed"] for r in report["formats"]] == [True, False]


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
    assert not os.path.exists(tmp_path / "out")


def test_an_unknown_format():
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) \['int4'\]"):
        export.ExportSpec(formats=("float32", "int4"))
    with pytest.raises(ValueError, match="io_dtype"):
        export.ExportSpec(io_dtype="int16")


def test_a_representative_dataset_of_the_wrong_shape(keras_model):
    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 1\).*\(4, 28, 28, 1\)"):
        formats.tflite_int8(keras_model, np.zeros((4, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="representative dataset"):
        formats.tflite_int8(keras_model, np.zeros((0, 32, 32, 1), np.float32))


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
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_predict_cli_classifies_image_files(exported, held_out, tmp_path):
    from PIL import Image

    out, _, _ = exported
    images, labels = held_out
    paths = []
    for i in range(3):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(to_uint8(images[i, 2:-2, 2:-2, 0])).save(path)
        paths.append(str(path))
    names = json.load(open(os.path.join(out, "metadata.json")))["class_names"]
    result = _run("-m", "export.predict", os.path.join(out, "model_int8_io.tflite"), *paths)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 3
    classifier = Classifier(os.path.join(out, "model_int8_io.tflite"))
    for line, path in zip(lines, paths):
        best = classifier.top_k(np.asarray(Image.open(path))[..., None], 1)[0][0]
        assert line.split(": ", 1)[1].startswith(best)
    assert sum(Classifier(os.path.join(out, "saved_model")).top_k(
        to_uint8(images[i, 2:-2, 2:-2]), 1)[0][0] == names[labels[i]] for i in range(3)) >= 2
    bad = _run("-m", "export.predict", os.path.join(out, "model_int8.tflite"), str(tmp_path))
    assert bad.returncode == 2 and "is not a file" in bad.stderr


def test_export_cli_on_a_run_directory(run_dir, fashion_dir, tmp_path):
    out = tmp_path / "cli"
    result = _run("-m", "export", f"--run_dir={run_dir}", f"--out={out}", "--formats=float16",
                  f"--data_dir={fashion_dir}", "--eval_images=200", "--latency_runs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "float16" in result.stdout and "agree" in result.stdout
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
    loaded, recipe = export.load_source(str(tmp_path / "mixed.keras"))
    assert recipe is None
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(images).numpy(), np.asarray(model(images), np.float32),
                               atol=0.02)
