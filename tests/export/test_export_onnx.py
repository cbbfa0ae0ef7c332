"""ONNX as a row of the format table: `python -m export --formats=...,onnx` writes model.onnx,
runs it in ONNX Runtime on the held-out images against the Keras model, and ships it only when
it agrees; its latency sits in the table beside LiteRT's."""

import importlib.util

import numpy as np
import pytest

import export
from export import formats, verify

needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx")),
    reason="pip install onnxruntime tf2onnx")


def _spec(fashion_dir, **overrides):
    return export.ExportSpec(**{**dict(formats=("float32", "onnx"), data_dir=fashion_dir,
                                       eval_images=300, calibration_images=10, latency_runs=3,
                                       mediapipe="off"), **overrides})


@needs_onnx
def test_onnx_is_written_verified_and_timed_like_every_format(run_dir, fashion_dir, keras_model,
                                                             held_out, tmp_path):
    from export.onnx_format import OnnxModel

    report = export.export(run_dir, str(tmp_path), _spec(fashion_dir))
    rows = {row["format"]: row for row in report["formats"]}
    row = rows["onnx"]
    assert row["passed"] and row["file"] == "model.onnx" and row["images"] == 300, row
    assert row["metadata_problems"] == [] and row["agreement"] == 1.0
    assert set(row["latency_ms"]) == {"1", "2"} and min(row["latency_ms"].values()) > 0
    onnx_line = [line for line in verify.format_table(report["formats"]).splitlines()
                 if line.startswith("onnx")]
    assert len(onnx_line) == 1 and f"{row['latency_ms']['2']:.2f}" in onnx_line[0]
    model = OnnxModel(str(tmp_path / "model.onnx"))
    assert list(model.labels) == report["class_names"] and model.view == held_out.view
    # Independently of the report: ONNX Runtime on uint8 frames, batches of any size, against
    # Keras on the same frames. float32 convolutions summed in another order differ by ~1e-6
    # in probabilities (as for the float32 .tflite); 1e-4 leaves room, a wrong view does not.
    frames = held_out.frames[:64]
    expected = keras_model(formats.frames_to_inputs(frames.astype(np.float32), held_out.view))
    np.testing.assert_allclose(model.predict(frames, batch_size=64), expected, atol=1e-4)
    np.testing.assert_allclose(model.predict(frames[:7], batch_size=1), expected[:7], atol=1e-4)


@needs_onnx
def test_an_onnx_file_that_disagrees_ships_nothing(run_dir, fashion_dir, tmp_path,
                                                    monkeypatch):
    """A writer that put the labels in the wrong order: the metadata read back catches it."""
    from export import onnx_format

    real = onnx_format.write_onnx

    def reversed_labels(model, path, view, class_names, **kwargs):
        return real(model, path, view, list(reversed(class_names)), **kwargs)

    monkeypatch.setattr(onnx_format, "write_onnx", reversed_labels)
    with pytest.raises(export.VerificationError, match="onnx .ONNX metadata does not match"):
        export.export(run_dir, str(tmp_path), _spec(fashion_dir, eval_images=50))
    assert not (tmp_path / "model.onnx").exists()
    assert (tmp_path / "model_float32.tflite").exists()  # the other format still shipped


def test_onnx_is_a_default_format():
    """onnxruntime, tf2onnx and onnx are in the export extra: a default export (ExportSpec(),
    the CLI's --formats) writes model.onnx, a float format under the float threshold."""
    assert "onnx" in export.FORMATS and "onnx" in export.DEFAULT_FORMATS
    assert "onnx" in export.ExportSpec().formats
    row = export.FORMATS["onnx"]
    assert (row.writer, row.quantized, row.fine_tune, row.tflite) == ("onnx", False, None, False)
    spec = export.ExportSpec(formats=("onnx",), min_agreement_float=0.97)
    assert spec.min_agreement("onnx") == 0.97  # a float format's threshold
