"""The custom layers against independent references: numpy for ImageNormalization and the option-A
shortcut, keras.layers.BatchNormalization (the unfused layer) for FusedBatchNormalization."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

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
    model = keras.Sequential([keras.Input((32, 32, 3)), ImageNormalization(mean, 64.0, name="norm")])
    config = model.get_layer("norm").get_config()
    assert np.array(config["mean"]).shape == (32, 32, 3) and config["std"] == 64.0
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.get_layer("norm").mean, mean.astype(np.float32))


def test_old_configs_load_as_channels_last():
    """Configs written before per-pixel means and channels_first: 3-element lists, no data_format."""
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
    (dict(mean=(1.0, 2.0, 3.0), std=(1.0, 2.0)), r"mean` of shape \(3,\) and `std` of shape \(2,\)"),
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
    with pytest.raises(ValueError, match=r"\(height, width, channels\) = \(32, 32, 1\).*channels_first"):
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


def _pair(shape, seed, momentum=0.9, epsilon=1.001e-5, **kwargs):
    """The fused layer and keras.layers.BatchNormalization with the same random weights."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    weights = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
               rng.uniform(0.5, 2.0, c)]
    layers = []
    for cls in (FusedBatchNormalization, keras.layers.BatchNormalization):
        layer = cls(momentum=momentum, epsilon=epsilon, **kwargs)
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
        layers.append(layer)
    return layers


def _train_step(layer, x, w):
    """Training-mode outputs, d(sum(y * w))/d(x, gamma, beta), and the moving statistics after."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * w)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y.numpy()] + [g.numpy() for g in grads] + \
        [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("shape", [(8, 16, 16, 32), (128, 4, 4, 16)])
def test_fused_training_equals_unfused_up_to_bessel(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, shape).astype("float32")
    w = rng.normal(0, 1, shape).astype("float32")
    fused, unfused = _pair(shape, seed=2)
    initial_var = unfused.moving_variance.numpy().copy()
    (y, dx, dg, db, mm, mv), (y0, dx0, dg0, db0, mm0, mv0) = (_train_step(l, x, w) for l in (fused, unfused))
    # Noise floor, measured against a float64 numpy BN on these shapes (5 seeds): max |y - y64|
    # is 6.8e-6 fused / 3.1e-6 unfused with oneDNN, 3.5e-6 / 3.1e-6 with Eigen
    # (TF_ENABLE_ONEDNN_OPTS=0), for |y| up to ~7: float32 epsilon 1.2e-7 x |y| x the few
    # roundings of a reduction over n = B*H*W. Fused vs unfused here: 3.3e-6 (oneDNN), 7.2e-7
    # (Eigen). Tolerance: the two floors' sum (1e-5), 2x.
    np.testing.assert_allclose(y, y0, atol=2e-5, rtol=0)
    # Gradients, relative to their largest entry. Floors vs float64: dx 7.5e-7 fused / 3.4e-7
    # unfused (oneDNN), 3.4e-7 / 3.4e-7 (Eigen); dgamma, dbeta (sums over n terms) 1.9e-6 /
    # 3.2e-6. Fused vs unfused here: dx 4.4e-7 / 1.4e-7, dgamma 1.2e-6 / 1.7e-6, dbeta
    # 4.3e-7 / 1.7e-6 (oneDNN / Eigen). Tolerance: 2x the floors' sum.
    for got, want, bound in ((dx, dx0, 2.5e-6), (dg, dg0, 1e-5), (db, db0, 1e-5)):
        np.testing.assert_allclose(got, want, atol=bound * np.abs(want).max(), rtol=0)
    # Moving mean, the same update in both: floors 2.5e-6 / 1.5e-6 relative; here 5.3e-7
    # (oneDNN), 0 (Eigen). Tolerance: 2x the floors' sum.
    np.testing.assert_allclose(mm, mm0, rtol=0, atol=8e-6 * np.abs(mm0).max())
    # Moving variance: the fused kernel's batch variance carries Bessel's n/(n-1) (1 + 4.9e-4
    # for n = 2048, 1 + 3.9e-4 for 8 * 16 * 16: ~40x the tolerance, so it must be there).
    # Relative difference after that factor: 1.1e-6 (oneDNN), 3.7e-7 (Eigen); floors 5e-7 /
    # 2.7e-7 on the stored variance, x ~3 to isolate the batch term. Tolerance 1e-5.
    n = np.prod(shape[:3])
    batch_var, batch_var0 = ((v - 0.9 * initial_var) / 0.1 for v in (mv, mv0))
    np.testing.assert_allclose(batch_var, batch_var0 * n / (n - 1), rtol=1e-5)


def test_fused_inference_is_the_parent_bitwise():
    fused, unfused = _pair((4, 8, 8, 16), seed=3)
    x = np.random.default_rng(4).normal(1, 2, (4, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(fused(x, training=False).numpy(), unfused(x, training=False).numpy())
    fused.trainable = unfused.trainable = False  # frozen: inference statistics even in training
    np.testing.assert_array_equal(fused(x, training=True).numpy(), unfused(x, training=True).numpy())


def _ops_of(layer, x, training):
    fn = tf.function(lambda t: layer(t, training=training))
    return {op.type for op in fn.get_concrete_function(tf.TensorSpec(x.shape)).graph.get_operations()}


@pytest.mark.parametrize("case, fused", [
    ("nhwc_training", True), ("inference", False), ("channels_first", False),
    ("bfloat16", False), ("renorm", False), ("rank2", False),
])
def test_fused_path_is_taken_only_where_it_applies(case, fused):
    shape = {"channels_first": (2, 16, 4, 4), "rank2": (8, 16)}.get(case, (2, 4, 4, 16))
    kwargs = {"channels_first": dict(axis=1), "renorm": dict(renorm=True),
              "bfloat16": dict(dtype="mixed_bfloat16")}.get(case, {})
    layer = FusedBatchNormalization(**kwargs)
    layer.build(shape)
    ops = _ops_of(layer, np.zeros(shape, "float32"), training=case != "inference")
    assert ("FusedBatchNormV3" in ops) is fused, sorted(ops)


def test_fused_layer_keeps_config_names_and_loads_keras_applications_weights():
    model = keras_resnet.ResNet50(weights=None, input_shape=(64, 64, 3))
    bn = model.get_layer("conv2_block1_1_bn")
    assert isinstance(bn, keras.layers.BatchNormalization) and type(bn) is FusedBatchNormalization
    plain = keras.layers.BatchNormalization.from_config(bn.get_config())
    assert plain.get_config() == {**bn.get_config(), "name": plain.name}


DETERMINISM = textwrap.dedent("""
    import numpy as np, tensorflow as tf, keras, keras_resnet
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype("float32")
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = keras_resnet.ResNet(8, weights=None, input_shape=(32, 32, 3), classes=4)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        losses = [float(model.train_on_batch(x, np.arange(8) % 4)) for _ in range(2)]
        runs.append((losses, [w.copy() for w in model.get_weights()]))
    assert runs[0][0] == runs[1][0], runs
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    print("deterministic", runs[0][0])
""")


def test_fused_training_runs_under_op_determinism():
    """enable_op_determinism() raises for ops without a deterministic kernel; FusedBatchNormV3
    and its gradient on CPU have one, and two runs are bitwise equal."""
    proc = subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0 and "deterministic" in proc.stdout, proc.stderr[-3000:]
