"""The custom layers against independent references: numpy for ImageNormalization and the option-A
shortcut, keras.layers.BatchNormalization for FusedBatchNormalization without a kernel (the
fused TensorFlow kernel is train's: tests/train/test_fused_batch_norm.py)."""

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.layers import FusedBatchNormalization, ImageNormalization, ZeroPadShortcut

RNG = np.random.default_rng(0)
PIXELS = RNG.uniform(0, 255, (2, 6, 5, 3)).astype("float32")  # (B, H, W, C), H != W
PER_PIXEL = RNG.uniform(50, 200, (6, 5, 3))


@pytest.mark.parametrize("mean, std", [
    (120.0, 64.0),
    ((123.68, 116.78, 103.94), (58.4, 57.1, 57.4)),
    (PER_PIXEL, 255.0),
    (PER_PIXEL, (58.4, 57.1, 57.4)),
    (PER_PIXEL[:1], PER_PIXEL[:, :1] / 2),  # (1, W, C) and (H, 1, C) broadcast too
])
@pytest.mark.parametrize("reverse", [False, True])
def test_image_normalization_equals_numpy_in_both_formats(mean, std, reverse):
    x = PIXELS[..., ::-1] if reverse else PIXELS
    expected = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    layer = ImageNormalization(mean, std, reverse, data_format="channels_last")
    # Elementwise float32 subtract and divide round once each, as numpy's: bitwise equal.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(PIXELS)), expected)
    first = ImageNormalization(mean, std, reverse, data_format="channels_first")
    got = keras.ops.convert_to_numpy(first(PIXELS.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(got, expected.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(first.mean, np.asarray(mean, np.float32))  # channels_last
    np.testing.assert_array_equal(first.std, np.asarray(std, np.float32))


def test_image_normalization_config_is_json_and_loads_safely(tmp_path):
    mean = RNG.uniform(0, 255, (32, 32, 3))
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              ImageNormalization(mean, 64.0, name="norm")])
    config = model.get_layer("norm").get_config()
    assert np.array(config["mean"]).shape == (32, 32, 3) and config["std"] == 64.0
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.get_layer("norm").mean, mean.astype(np.float32))


def test_old_configs_load_as_channels_last():
    """Configs written before per-pixel means and channels_first: 3-element lists, no
    data_format."""
    old = {"name": "preprocessing", "trainable": True, "dtype": "float32",
           "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0], "reverse_channels": True}
    layer = keras.saving.deserialize_keras_object(
        {"module": None, "class_name": "keras_resnet>ImageNormalization", "config": old})
    assert layer.data_format == "channels_last" and layer.mean.shape == (3,)
    expected = PIXELS[..., ::-1] - np.array(old["mean"], np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(PIXELS)), expected)
    pad = keras.saving.deserialize_keras_object(
        {"module": None, "class_name": "keras_resnet>ZeroPadShortcut",
         "config": {"name": "conv3_block1_0_pad", "filters": 8, "strides": 2}})
    assert pad.data_format == "channels_last"


@pytest.mark.parametrize("kwargs, message", [
    (dict(mean=0.0, std=0.0), r"`std` must be > 0 everywhere; received std=0.0"),
    (dict(mean=0.0, std=(1.0, -1.0, 1.0)), r"`std` must be > 0.*-1.0"),
    (dict(mean=np.zeros((32, 3)), std=1.0), r"scalar, a per-channel sequence \(C,\) or a per-pixel "
                                             r"array \(H, W, C\).*received shape \(32, 3\)"),
    (dict(mean="bgr", std=1.0), r"`mean` must be numbers; received mean='bgr'"),
    (dict(mean=float("nan"), std=1.0), r"`mean` must be finite"),
    (dict(mean=(1.0, 2.0, 3.0), std=(1.0, 2.0)),
     r"mean` of shape \(3,\) and `std` of shape \(2,\)"),
])
def test_image_normalization_bad_constants(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageNormalization(**kwargs)


@pytest.mark.parametrize("mean, shape, message", [
    (np.zeros((32, 32, 3)), (28, 28, 3), r"`mean` of shape \(32, 32, 3\) does not broadcast.*"
                                         r"\(28, 28, 3\)"),
    (np.zeros((32, 32, 3)), (None, None, 3), r"\(32, 32, 3\).*\(None, None, 3\).*static size"),
    ((1.0, 2.0, 3.0), (32, 32, 1), r"`mean` of shape \(3,\) does not broadcast.*\(32, 32, 1\)"),
    (1.0, (32, 32), r"takes a batch of images"),
])
def test_image_normalization_checks_the_input_at_build(mean, shape, message):
    with pytest.raises(ValueError, match=message):
        keras.Sequential([keras.Input(shape), ImageNormalization(mean, 1.0)])


def test_image_normalization_channels_first_reads_c_h_w():
    with pytest.raises(ValueError,
                       match=r"\(height, width, channels\) = \(32, 32, 1\).*channels_first"):
        keras.Sequential([keras.Input((1, 32, 32)),
                          ImageNormalization((1.0, 2.0, 3.0), 1.0, data_format="channels_first")])
    out = ImageNormalization(PER_PIXEL, 2.0, data_format="channels_first")(keras.Input((3, 6, 5)))
    assert out.shape == (None, 3, 6, 5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_option_a_shortcut_in_both_formats(data_format):
    x = RNG.normal(size=(2, 7, 6, 3)).astype("float32")
    expected = np.zeros((2, 4, 3, 8), "float32")
    expected[..., :3] = x[:, ::2, ::2, :]
    layer = ZeroPadShortcut(8, 2, data_format=data_format)
    first = data_format == "channels_first"
    got = keras.ops.convert_to_numpy(layer(x.transpose(0, 3, 1, 2) if first else x))
    np.testing.assert_array_equal(got, expected.transpose(0, 3, 1, 2) if first else expected)
    assert tuple(layer.compute_output_shape(got.shape[:1] + (None,) * 3)) == \
        ((2, 8, None, None) if first else (2, None, None, 8))
    with pytest.raises(ValueError, match=r"up to filters=2.*\(2, 7, 6, 3\)"):
        ZeroPadShortcut(2, 1)(x)


# --------------------------------------------------------------- FusedBatchNormalization


def test_without_a_registered_kernel_the_fused_layer_is_the_parent_bitwise(monkeypatch):
    monkeypatch.setattr(keras_resnet.layers, "FUSED_TRAINING_KERNELS", {})
    rng = np.random.default_rng(5)
    x = rng.normal(2, 3, (4, 8, 8, 16)).astype("float32")
    fused = FusedBatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fused(x, training=True)),
                                  keras.ops.convert_to_numpy(plain(x, training=True)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fused.moving_variance),
                                  keras.ops.convert_to_numpy(plain.moving_variance))


def test_a_kernel_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        keras_resnet.layers.register_fused_training_kernel("tensorflow", None)


def test_fused_layer_keeps_config_names_and_loads_keras_applications_weights():
    model = keras_resnet.ResNet50(weights=None, input_shape=(64, 64, 3))
    bn = model.get_layer("conv2_block1_1_bn")
    assert isinstance(bn, keras.layers.BatchNormalization) and type(bn) is FusedBatchNormalization
    plain = keras.layers.BatchNormalization.from_config(bn.get_config())
    assert plain.get_config() == {**bn.get_config(), "name": plain.name}
