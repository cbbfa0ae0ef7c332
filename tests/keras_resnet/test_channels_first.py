"""channels_first models against two independent references, under every backend: the same
weights in a channels_last model (inputs transposed), and keras.applications' own ResNets under
channels_first loading the same keras.applications `.h5` file.

TensorFlow on CPU runs NCHW convolutions and pooling only through oneDNN: with
`TF_ENABLE_ONEDNN_OPTS=0` here, as by default on CPUs without AVX512-VNNI/BF16/AMX (an AVX2-only
AMD EPYC), Conv2D says "only supports the NHWC tensor format on the CPU" and MaxPool/AvgPool
"only supports NHWC on device type CPU", for keras.applications exactly as for us (asserted
below). Models still build there; JAX and PyTorch run channels_first on any CPU.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnet

from .conftest import randomize, save_legacy_h5


def tf_runs_nchw():
    """Whether this TensorFlow runs an NCHW Conv2D on the CPU (oneDNN on)."""
    try:
        tf.nn.conv2d(tf.zeros((1, 1, 3, 3)), tf.zeros((1, 1, 1, 1)), 1, "SAME", data_format="NCHW")
        return True
    except tf.errors.UnimplementedError:
        return False


NCHW = tf_runs_nchw()
needs_nchw = pytest.mark.skipif(not NCHW, reason="TensorFlow's CPU kernels without oneDNN have "
                                "no NCHW Conv2D/MaxPool (keras.applications fails the same way)")


@pytest.fixture
def channels_first():
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format("channels_last")


# --------------------------------------------------------------- every backend, in a subprocess

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras, keras_resnet
    backend, d = sys.argv[1], sys.argv[2]
    assert keras.backend.backend() == backend
    x = np.load(f"{d}/x.npy")
    xt = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    out = {}
    def run(key, model, inputs, training=False):
        out[key] = keras.tree.map_structure(keras.ops.convert_to_numpy,
                                            model(inputs, training=training))
    def both(build):
        keras.config.set_image_data_format("channels_last")
        last = build(x.shape[1:])
        keras.config.set_image_data_format("channels_first")
        return last, build(xt.shape[1:])

    last, first = both(lambda s: keras_resnet.ResNet20(weights=f"{d}/resnet20.weights.h5",
                                                      input_shape=s, classes=10,
                                                      classifier_activation=None))
    run("r20map_last", keras_resnet.feature_extractor(last, ["C4"]), x)
    run("r20map_first", keras_resnet.feature_extractor(first, ["C4"]), xt)
    out["r20map_last"], out["r20map_first"] = out["r20map_last"]["C4"], out["r20map_first"]["C4"]
    # Training mode last: it updates the moving statistics (TF's fused kernel, taken by the
    # channels_last net only, with Bessel's correction: inference would differ after it).
    for training in (False, True):
        run(f"r20_last_{training}", last, x, training)
        run(f"r20_first_{training}", first, xt, training)
    last, first = both(lambda s: keras_resnet.build_resnet(
        [(16, 1, 1), (32, 1, 2)], "basic", stem="cifar", shortcut="A", layout="v1.5",
        include_preprocessing=True, preprocessing=(np.load(f"{d}/mean.npy"), 64.0, True),
        weights=f"{d}/small.weights.h5", input_shape=s, classes=10, classifier_activation=None))
    run("small_last", last, x * 255)
    run("small_first", first, xt * 255)
    keras.config.set_image_data_format("channels_first")
    for name in sys.argv[3:]:
        path = f"{d}/{name}.h5"
        for source, key in ((keras_resnet, name), (keras.applications, f"{name}_keras")):
            model = getattr(source, name)(weights=path, input_shape=xt.shape[1:],
                                          classifier_activation=None)
            run(key, model, xt)
    np.savez(f"{d}/out_{backend}.npz", **out)
""")

# keras.applications nets compared per backend. Building one ResNet-50 under JAX takes ~11 s on
# 2 cores (its eager call ~5 s more), so JAX checks our own layers (ResNet-20, the per-pixel
# mean net) against channels_last only; TensorFlow (where it runs NCHW) and torch compare with
# keras.applications.
KERAS_APPLICATIONS = {"tensorflow": ("ResNet50", "ResNet50V2"), "torch": ("ResNet50", "ResNet50V2"),
                      "jax": ()}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Random channels_last weights: ours for ResNet-20 and a small net with a per-pixel-mean
    preprocessing layer, keras.applications' legacy `.h5` for ResNet50/ResNet50V2 at 64 px."""
    d = tmp_path_factory.mktemp("channels_first")
    rng = np.random.default_rng(0)
    np.save(d / "x.npy", rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32"))
    np.save(d / "mean.npy", rng.uniform(60, 190, (64, 64, 3)))
    randomize(keras_resnet.ResNet20(weights=None, input_shape=(64, 64, 3), classes=10)
              ).save_weights(d / "resnet20.weights.h5")
    randomize(keras_resnet.build_resnet(
        [(16, 1, 1), (32, 1, 2)], "basic", stem="cifar", shortcut="A", layout="v1.5",
        input_shape=(64, 64, 3), classes=10), seed=1).save_weights(d / "small.weights.h5")
    for i, name in enumerate(KERAS_APPLICATIONS["tensorflow"]):
        reference = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
        save_legacy_h5(randomize(reference, seed=2 + i), d / f"{name}.h5")
    return d


def _max_rel(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_channels_first_equals_channels_last_and_keras_applications(backend, weight_files):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    if backend == "tensorflow" and not NCHW:
        pytest.skip("TensorFlow without oneDNN has no NCHW CPU kernels (see module docstring)")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    nets = KERAS_APPLICATIONS[backend]
    subprocess.run([sys.executable, "-c", SCRIPT, backend, str(weight_files), *nets],
                   env=env, check=True, timeout=900)
    out = dict(np.load(weight_files / f"out_{backend}.npz"))
    rel = {key: _max_rel(out[key.replace("last", "first")], out[key])
           for key in ("r20_last_False", "r20_last_True", "small_last")}
    rel["r20map"] = _max_rel(out["r20map_first"].transpose(0, 2, 3, 1), out["r20map_last"])
    print(backend, os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
          {k: f"{v:.1e}" for k, v in rel.items()})
    # The same weights in either layout: the same products summed in another order. max |diff|
    # / max |output| measured with oneDNN (TF's default here) and with TF_ENABLE_ONEDNN_OPTS=0
    # (TF skipped then, see the module docstring; JAX and torch measured the same both ways):
    #   tensorflow  inference 1.2e-7, training mode 6.0e-7 (channels_last takes the fused BN
    #               kernel, channels_first the unfused one), per-pixel-mean net 3.1e-7, C4 map 0
    #   jax         1.2e-7, 2.2e-7, 1.6e-7, 0
    #   torch       2.3e-7, 3.6e-7, 1.6e-7, 1.1e-6
    # Float32 epsilon is 1.2e-7; 20 layers of 3x3x64 sums give errors of a few epsilon.
    # Tolerance 1e-5: 9x the largest, and far under a wrong transpose or axis (O(1)).
    for key, value in rel.items():
        assert value <= 1e-5, (key, value, rel)
    # keras.applications under channels_first, same file, same backend: the same ops in the same
    # order (the BN layer is the parent's inference path), measured bitwise equal everywhere.
    for name in nets:
        assert np.abs(out[name]).max() > 1.0  # logits, not a saturated softmax
        np.testing.assert_array_equal(out[name], out[f"{name}_keras"], err_msg=name)


# ------------------------------------------------------- building, in this process (TensorFlow)


@pytest.mark.parametrize("kwargs, shape", [
    (dict(include_top=False), (None, 2048, 2, 2)),
    (dict(include_top=False, pooling="avg"), (None, 2048)),
    (dict(include_top=False, pooling="max"), (None, 2048)),
    (dict(classes=7), (None, 7)),
])
def test_heads_match_keras_applications(channels_first, kwargs, shape):
    ours = keras_resnet.ResNet50(weights=None, input_shape=(3, 64, 64), **kwargs)
    theirs = keras.applications.ResNet50(weights=None, input_shape=(3, 64, 64), **kwargs)
    assert ours.output.shape == theirs.output.shape == shape
    assert ours.count_params() == theirs.count_params()
    assert ours.get_layer("conv2_block1_1_bn").axis == 1


@pytest.mark.parametrize("channels", [1, 4])
def test_one_and_four_channel_inputs(channels_first, channels):
    model = keras_resnet.ResNet20(weights=None, input_shape=(channels, 32, 32), classes=10)
    assert model.input.shape == (None, channels, 32, 32)
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, channels, 16)
    if NCHW or keras.backend.backend() != "tensorflow":
        x = np.random.default_rng(0).uniform(0, 1, (2, channels, 32, 32)).astype("float32")
        assert keras.ops.convert_to_numpy(model(x)).shape == (2, 10)


def test_input_tensor_and_any_size(channels_first):
    x = keras.Input((3, None, None), name="image")
    model = keras_resnet.ResNet18(weights=None, input_tensor=x, include_top=False, pooling="avg")
    assert model.input is x and model.output.shape == (None, 512)
    features = keras_resnet.feature_extractor(keras_resnet.ResNet50(
        weights=None, include_top=False, input_shape=(3, 224, 224)))
    assert {k: tuple(v.shape[1:]) for k, v in features.output.items()} == {
        "C2": (256, 56, 56), "C3": (512, 28, 28), "C4": (1024, 14, 14), "C5": (2048, 7, 7)}


def test_multiply_adds_read_the_spatial_axes(channels_first):
    first = keras_resnet.count_multiply_adds(keras_resnet.ResNet50(weights=None))
    keras.config.set_image_data_format("channels_last")
    assert first == keras_resnet.count_multiply_adds(keras_resnet.ResNet50(weights=None))
    assert first == pytest.approx(3.8e9, rel=0.05)  # Table 1 (two digits), as in test_models


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(224, 224, 3)), r"at least 32x32.*\(224, 224, 3\).*channels_first: "
                                      r"\(channels, height, width\)"),
    (dict(input_shape=(3, 16, 16), include_top=False), r"at least 32x32.*\(3, 16, 16\)"),
    (dict(input_shape=(3, None, None)),
     r"static shape.*\(3, None, None\).*input_shape=\(3, 224, 224\)"),
    (dict(input_shape=(None, 64, 64), include_top=False), r"channel dimension must be known"),
    (dict(input_shape=(64, 64)), r"3 entries \(channels_first: \(channels, height, width\)\)"),
])
def test_shape_errors_speak_channels_first(channels_first, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_resnet.ResNet50(weights=None, **kwargs)


def test_rgb_weights_load_into_a_one_channel_channels_first_model(channels_first, tmp_path):
    """Kernels are (kh, kw, in, out) in both formats: the first conv's RGB kernels are summed
    for a (1, H, W) input just as for (H, W, 1) (issue 21.2; checked against timm in
    test_transfer.py)."""
    keras.config.set_image_data_format("channels_last")
    source = randomize(keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10))
    path = str(tmp_path / "rgb.weights.h5")
    source.save_weights(path)
    keras.config.set_image_data_format("channels_first")
    gray = keras_resnet.ResNet20(weights=path, input_shape=(1, 32, 32), classes=10)
    np.testing.assert_array_equal(gray.get_layer("conv1_conv").get_weights()[0],
                                  source.get_layer("conv1_conv").get_weights()[0].sum(
                                      axis=2, keepdims=True))


@needs_nchw
def test_channels_first_trains_a_step_and_roundtrips(channels_first, tmp_path):
    model = keras_resnet.ResNet20(weights=None, input_shape=(3, 32, 32), classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (4, 3, 32, 32)).astype("float32")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(x, np.arange(4)))
    model.save(tmp_path / "cf.keras")
    keras.config.set_image_data_format("channels_last")  # the file, not the global, decides
    loaded = keras.saving.load_model(tmp_path / "cf.keras", safe_mode=True)
    assert loaded.get_layer("conv3_block1_0_pad").data_format == "channels_first"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.skipif(NCHW, reason="this TensorFlow runs NCHW on the CPU (oneDNN)")
def test_without_onednn_keras_applications_fails_on_nchw_too(channels_first):
    """The reference for what must work: without oneDNN neither model runs channels_first."""
    x = np.zeros((1, 3, 32, 32), "float32")
    for model in (keras.applications.ResNet50(weights=None, input_shape=(3, 32, 32)),
                  keras_resnet.ResNet50(weights=None, input_shape=(3, 32, 32))):
        with pytest.raises(tf.errors.UnimplementedError, match="only supports the NHWC"):
            model(x)
