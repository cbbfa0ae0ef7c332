"""export.onnx_format: a ResNet-8 with fixed (seeded He-init) weights for 1-channel 28x28 images
padded to 32x32 (the Fashion-MNIST view), written as ONNX and run in ONNX Runtime against Keras
on the same frames."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

CLASSES = tuple(f"class {i}" for i in range(10))
# Measured ONNX Runtime vs Keras (TF, oneDNN) on 256 such frames, at 28x28 and resized from
# 40x36, at 1 and 2 threads: max abs difference of the probabilities 1.9e-7 (float32 summation
# order); 1e-5 leaves room for other CPUs' kernels.
ATOL = 1e-5


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """(path, Keras model, view) of the written file."""
    import keras

    import keras_resnet
    from export import onnx_format
    from train import views

    keras.utils.set_random_seed(0)
    view = views.View(32, 32, 1, "stretch", pad=2)
    inputs = keras.Input(view.shape, name="image")
    x = keras_resnet.ImageNormalization(73.0, 90.0, name="mean_subtraction")(inputs)
    model = keras_resnet.create("resnet8", weights=None, input_tensor=x, classes=len(CLASSES))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx_format.write_onnx(model, path, view, CLASSES, description="a test model")
    return path, model, view


def _frames(n, seed=0, size=(28, 28)):
    """uint8 RGB images whose three channels are one gray image (what a gray photo decodes
    to as RGB), so the file's luma gives the gray image back."""
    gray = np.random.default_rng(seed).integers(0, 256, (n, *size, 1)).astype(np.uint8)
    return gray, np.repeat(gray, 3, -1)


def _keras(model, view, gray):
    from train import views

    return model(views.apply(gray, view), training=False).numpy()


def test_metadata_and_input_contract(onnx_file):
    import onnxruntime as ort

    from export import onnx_format

    path, _, view = onnx_file
    meta = onnx_format.read_onnx_metadata(path)
    assert meta.labels == CLASSES and meta.view == view and meta.input_size == (28, 28)
    assert meta.description == "a test model"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,), (out,) = session.get_inputs(), session.get_outputs()
    assert given.type == "tensor(uint8)" and given.shape[1:] == [28, 28, 3]
    assert isinstance(given.shape[0], str)  # any batch size
    assert out.name == "probabilities" and out.shape[1:] == [10]


def test_onnx_runtime_agrees_with_keras(onnx_file):
    from export import onnx_format

    path, model, view = onnx_file
    gray, rgb = _frames(64)
    expected = _keras(model, view, gray)
    assert expected.max(-1).mean() < 0.9  # not saturated: the comparison means something
    got = onnx_format.OnnxModel(path, num_threads=1).predict(rgb)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    one_by_one = np.concatenate([onnx_format.OnnxModel(path).predict(rgb[i:i + 1])
                                 for i in range(5)])  # batch 1 and batch 64: the same file
    np.testing.assert_allclose(one_by_one, got[:5], atol=ATOL, rtol=0)


def test_images_of_other_sizes_and_channels_are_resized_by_the_view(onnx_file):
    from export import onnx_format

    path, model, view = onnx_file
    gray, rgb = _frames(6, seed=1, size=(40, 36))
    model_file = onnx_format.OnnxModel(path)
    assert model_file.frames(gray).shape == (6, 28, 28, 3)
    expected = _keras(model, view, gray)  # the view resizes the gray photo itself
    np.testing.assert_allclose(model_file.predict(gray), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(model_file.predict(rgb), expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"takes uint8 images .* received float32"):
        model_file.predict(rgb.astype(np.float32))


def test_latency_and_verification_row(onnx_file):
    from export import onnx_format

    path, model, view = onnx_file
    gray, rgb = _frames(20, seed=2)
    labels = np.arange(20) % 10
    reference = _keras(model, view, gray)
    row, probabilities = onnx_format.verify_onnx(path, rgb, labels, reference, min_agreement=0.99,
                                                 threads=(1, 2), latency_runs=3)
    assert row["passed"] and row["agreement"] == 1.0 and row["max_abs_diff"] <= ATOL
    assert row["accuracy"] == pytest.approx(np.mean(reference.argmax(-1) == labels))
    assert set(row["latency_ms"]) == {"1", "2"} and min(row["latency_ms"].values()) > 0
    assert probabilities.shape == (20, 10)


def test_a_file_without_our_metadata_is_refused(onnx_file, tmp_path):
    import onnx

    from export import onnx_format

    path, _, _ = onnx_file
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match=r"has no \['labels', 'view'\] in its metadata_props"):
        onnx_format.OnnxModel(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="ONNX Runtime cannot load"):
        onnx_format.OnnxModel(tmp_path / "junk.onnx")


def test_center_crop_view_frames_pass_unchanged_and_photos_are_cropped(tmp_path):
    """A fine-tuned model's view resizes the shorter side and centre-crops (e.g. 64 of 73).
    Frames already at the file's input size (export's verification, a camera pipeline) go in
    unchanged; a photo of another size is resized and cropped by the view, as training's
    evaluation did. (Regression: frames at the input size were cropped a second time, and a
    fine-tuned ResNet-18's ONNX file agreed with Keras on 0.911 of its frames.)"""
    import keras

    import keras_resnet
    from export import onnx_format
    from train import views

    keras.utils.set_random_seed(0)
    view = views.View(24, 24, 3, "center_crop", resize_shorter=28)
    inputs = keras.Input(view.shape, name="image")
    x = keras_resnet.ImageNormalization(120.0, 60.0, name="mean_subtraction")(inputs)
    model = keras_resnet.create("resnet8", weights=None, input_tensor=x, classes=len(CLASSES))
    path = tmp_path / "crop.onnx"
    onnx_format.write_onnx(model, path, view, CLASSES)
    runner = onnx_format.OnnxModel(path, num_threads=1)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (16, 24, 24, 3)).astype(np.uint8)
    expected = model(views.finish(frames.astype(np.float32), view), training=False).numpy()
    np.testing.assert_allclose(runner.predict(frames), expected, atol=ATOL, rtol=0)
    photos = rng.integers(0, 256, (8, 40, 30, 3)).astype(np.uint8)
    expected = model(views.apply(photos, view), training=False).numpy()
    np.testing.assert_allclose(runner.predict(photos), expected, atol=ATOL, rtol=0)
