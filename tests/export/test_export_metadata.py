"""export/ on a ResNet-8 trained on real Fashion-MNIST (the session's export, conftest.py):
every TFLite file carries its TFLite Metadata, MediaPipe's ImageClassifier runs it with its
labels, wrong metadata is caught and ships nothing, and a file without frames takes the model's
input. Conversion, accuracy, SavedModel and the CLIs: test_export.py."""

import dataclasses
import os

import numpy as np
import pytest

import export
from export import formats, mediapipe_runtime, tflite_metadata, verify
from export.predict import Classifier

needs_mediapipe = pytest.mark.skipif(mediapipe_runtime.available() is not None,
                                     reason=str(mediapipe_runtime.available()))
TFLITE = [f for f in export.FORMATS if export.FORMATS[f].tflite]

def test_every_tflite_carries_its_metadata(exported):
    out, rows, report = exported
    for fmt in TFLITE:
        meta = tflite_metadata.read_metadata(os.path.join(out, export.FILES[fmt]))
        assert list(meta["labels"]) == report["class_names"], fmt
        assert (meta["color_space"], meta["height"], meta["width"]) == ("RGB", 28, 28)
        assert tuple(meta["mean"]) == (0.0,) and tuple(meta["std"]) == (1.0,)
        assert "resnet8" in meta["description"] and "fashion_mnist" in meta["description"]
        assert f"{report['keras_accuracy']:.4f}" in meta["description"]
        assert meta["author"] and meta["license"] and meta["version"]
        assert rows[fmt]["metadata_problems"] == []


@needs_mediapipe
def test_mediapipe_runs_every_file_with_its_labels(exported, held_out):
    out, rows, report = exported
    for fmt in TFLITE:
        row = rows[fmt]
        assert row["mediapipe"] == "ran" and row["mediapipe_names_ok"], row
        floor = 0.98 if export.FORMATS[fmt].quantized else 0.99
        assert row["mediapipe_agreement"] >= floor, row
    # Independently of the report: MediaPipe's own names for a few frames are the labels of
    # LiteRT's top-1 on the same frames.
    path = os.path.join(out, "model_int8.tflite")
    with mediapipe_runtime.ImageClassifierRunner(path) as runner:
        top1, names, _ = runner.classify(held_out.frames[:30])
    litert = export.TFLiteModel(path).predict(held_out.frames[:30]).argmax(-1)
    assert np.mean(top1 == litert) >= 0.9
    assert names == [report["class_names"][i] for i in top1]


def _rewrite_metadata(path, target, **changes):
    meta = tflite_metadata.read_metadata(path)
    fields = dict(name=meta["name"], labels=tuple(meta["labels"]),
                  description=meta["description"], version=meta["version"],
                  author=meta["author"], license=meta["license"], mean=tuple(meta["mean"]),
                  std=tuple(meta["std"]))
    card = tflite_metadata.ModelCard(**{**fields, **changes})
    content = tflite_metadata.add_metadata(open(path, "rb").read(), card)
    target.write_bytes(content)
    return card


def test_wrong_metadata_is_caught(exported, keras_model, tmp_path):
    out, _, report = exported
    path = os.path.join(out, "model_float32.tflite")
    right = _rewrite_metadata(path, tmp_path / "right.tflite")
    assert verify.verify_metadata(str(tmp_path / "right.tflite"), right) == []
    shuffled = dataclasses.replace(right, labels=tuple(reversed(right.labels)))
    assert any("labels" in p for p in verify.verify_metadata(path, shuffled))
    # A float input of raw pixels described as normalized to [-1, 1] (mean 127.5, std 127.5):
    # an app would feed it (pixel - 127.5) / 127.5. The writer of uint8 files refuses such a
    # card outright; for a float file, verification names the mismatch.
    raw = formats.convert_model(keras_model)
    card = tflite_metadata.ModelCard(name="m", labels=tuple(report["class_names"]),
                                     color_space="GRAYSCALE")
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(tflite_metadata.add_metadata(
        raw, dataclasses.replace(card, mean=(127.5,), std=(127.5,))))
    problems = verify.verify_metadata(str(wrong), card)
    assert any("mean" in p for p in problems) and any("std" in p for p in problems)


def test_an_export_with_wrong_metadata_ships_nothing(run_dir, fashion_dir, tmp_path,
                                                     monkeypatch):
    """A writer that put the labels in the wrong order: verification reads them back."""
    from export import exporter

    original = tflite_metadata.add_metadata

    def add_wrong(content, card):
        return original(content, dataclasses.replace(card, labels=tuple(reversed(card.labels))))

    monkeypatch.setattr(exporter.tflite_metadata, "add_metadata", add_wrong)
    spec = export.ExportSpec(formats=("float32",), data_dir=fashion_dir, eval_images=100,
                             calibration_images=20, latency_runs=2)
    with pytest.raises(export.VerificationError, match="TFLite Metadata does not match"):
        export.export(run_dir, str(tmp_path), spec)
    assert not (tmp_path / "model_float32.tflite").exists()


def test_without_frames_the_file_takes_the_model_input(run_dir, fashion_dir, held_out,
                                                       tmp_path):
    spec = export.ExportSpec(formats=("float32", "int8_io"), data_dir=fashion_dir,
                             eval_images=200, calibration_images=50, latency_runs=2,
                             frames=False)
    report = export.export(run_dir, str(tmp_path), spec)
    rows = {r["format"]: r for r in report["formats"]}
    model = export.TFLiteModel(str(tmp_path / "model_float32.tflite"))
    assert model.input_shape == (32, 32, 1) and model.input_dtype == np.float32
    integer = export.TFLiteModel(str(tmp_path / "model_int8_io.tflite"))
    # pinned, not calibrated: its uint8 values are the pixels, whatever the calibration saw
    assert integer.input_dtype == np.uint8 and integer.input_quantization == (1.0, 0)
    meta = tflite_metadata.read_metadata(str(tmp_path / "model_float32.tflite"))
    assert meta["color_space"] == "GRAYSCALE"
    assert all(r["passed"] and r["mediapipe"].startswith("skipped") for r in rows.values())
    image = held_out.frames[0, ..., :1]  # a 28x28 image: padded to 32x32, not stretched
    for name, file in (("float32", model), ("int8_io", integer)):
        got = Classifier(str(tmp_path / export.FILES[name]))(image)  # view from metadata.json
        np.testing.assert_allclose(got, file.predict(held_out.eval_inputs[:1])[0], atol=1e-6)
