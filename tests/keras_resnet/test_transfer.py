"""Transfer learning in the model library (issue 21.1, 21.2): `resolve_pretrained` says what a
weight set is and how its inputs were normalized; `load_pretrained` loads it into a model of
other classes or input channels. References: the source model itself (its weights and outputs),
timm's `adapt_input_conv`, torchvision state dicts, numpy averages.
"""

import json
import os
import socket
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")

import keras  # noqa: E402

import keras_resnet  # noqa: E402
from keras_resnet import convert  # noqa: E402
from keras_resnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from keras_resnet.weights import registry, transfer  # noqa: E402

from .conftest import randomize  # noqa: E402

TORCH_PIXELS = (tuple(255 * m for m in IMAGENET_MEAN), tuple(255 * s for s in IMAGENET_STD))


def run(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def values(model):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers
            if layer.weights}


def assert_layers_equal(model, reference, names):
    for name in names:
        for a, b in zip(model.get_layer(name).get_weights(), reference[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def train_like_model(arch, size, mean, classes=10, std=1.0, reverse=False, channels=3):
    """A model as train/model.py builds it: raw pixels -> 'mean_subtraction' -> keras_resnet."""
    inputs = keras.Input((size, size, channels), name="image")
    x = keras_resnet.ImageNormalization(mean, std, reverse, name="mean_subtraction",
                                        dtype="float32")(inputs)
    return keras_resnet.create(arch, weights=None, input_tensor=x, classes=classes)


@pytest.fixture(scope="module")
def resnet20_source(tmp_path_factory):
    """A CIFAR ResNet-20 with non-trivial weights, saved as .weights.h5 (10 classes)."""
    model = randomize(keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10))
    path = str(tmp_path_factory.mktemp("src") / "resnet20.weights.h5")
    model.save_weights(path)
    return path, values(model), model


@pytest.fixture(scope="module")
def torch_resnet18(tmp_path_factory):
    """torchvision's ResNet-18 (random weights, every BatchNorm non-trivial) as .safetensors."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = str(tmp_path_factory.mktemp("torch") / "resnet18.safetensors")
    safetensors_torch.save_file(state, path)
    return path, {k: v.numpy() for k, v in state.items()}


# ------------------------------------------------------------------- head replacement


def test_other_classes_leave_the_head_at_init_and_load_the_backbone(resnet20_source):
    path, source, _ = resnet20_source
    pre = transfer.resolve_pretrained("resnet20", path)
    assert (pre.source, pre.classes, pre.input_channels, pre.variant) == ("file", 10, 3, "v1.5")
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=4)
    head_at_init = model.get_layer("predictions").get_weights()
    report = transfer.load_pretrained(model, pre)
    assert report.layers_left_at_init == ("predictions",) and report.adapted == ()
    backbone = [name for name in source if name != "predictions"]
    assert sorted(report.layers_loaded) == sorted(backbone)
    assert_layers_equal(model, source, backbone)
    for a, b in zip(model.get_layer("predictions").get_weights(), head_at_init):
        np.testing.assert_array_equal(a, b)


def test_same_classes_load_every_layer(resnet20_source):
    path, source, reference = resnet20_source
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10)
    report = transfer.load_pretrained(model, transfer.resolve_pretrained("resnet20", path))
    assert report.layers_left_at_init == () and "predictions" in report.layers_loaded
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(run(model, x), run(reference, x))


def test_torch_checkpoint_head_replaced(torch_resnet18):
    path, state = torch_resnet18
    pre = transfer.resolve_pretrained("resnet18", path, normalization="torch")
    assert (pre.classes, pre.variant, pre.normalization) == (1000, "v1.5", TORCH_PIXELS)
    model = keras_resnet.ResNet18(weights=None, input_shape=(64, 64, 3), classes=5)
    report = transfer.load_pretrained(model, pre)
    assert report.layers_left_at_init == ("predictions",)
    np.testing.assert_array_equal(model.get_layer("conv2_block1_1_conv").get_weights()[0],
                                  state["layer1.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("conv5_block2_2_bn").get_weights()[3],
                                  state["layer4.1.bn2.running_var"])


# ------------------------------------------------------------------- input channels (21.2)


def timm_kernel(keras_kernel, channels):
    """timm's adapt_input_conv on the torch layout (out, in, kh, kw), back in Keras' layout."""
    weight = torch.from_numpy(np.ascontiguousarray(keras_kernel.transpose(3, 2, 0, 1)))
    return timm.models.adapt_input_conv(channels, weight).numpy().transpose(2, 3, 1, 0)


@pytest.mark.parametrize("channels", [1, 4, 6])
def test_first_conv_follows_timm_and_keeps_the_response(resnet20_source, channels):
    path, source, reference = resnet20_source
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, channels), classes=10)
    report = transfer.load_pretrained(model, transfer.resolve_pretrained("resnet20", path))
    assert report.adapted == ("conv1_conv",) and report.layers_left_at_init == ()
    kernel = model.get_layer("conv1_conv").get_weights()[0]
    assert kernel.shape == (3, 3, channels, 16)
    np.testing.assert_array_equal(kernel, timm_kernel(source["conv1_conv"][0], channels))
    if channels % 3 and channels != 1:
        return  # 4 channels weigh R twice: the response is kept only on average
    # The rule's point: equal channels give the RGB net's response to (g, g, g).
    gray = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    ours = run(model, np.repeat(gray, channels, -1))
    theirs = run(reference, np.repeat(gray, 3, -1))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)  # float32 reassociation


@pytest.mark.parametrize("channels", [1, 4])
def test_library_loads_rgb_torch_weights_into_other_channels(torch_resnet18, channels):
    path, state = torch_resnet18
    model = keras_resnet.ResNet18(weights=path, input_shape=(64, 64, channels))
    expected = timm.models.adapt_input_conv(channels, torch.from_numpy(state["conv1.weight"]))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  expected.numpy().transpose(2, 3, 1, 0))


@pytest.mark.parametrize("base, channels", [(3, 1), (3, 2), (3, 4), (3, 6), (1, 3), (3, 3)])
def test_adapt_input_conv_is_timms_rule_bitwise(base, channels):
    """Both layouts; base 1 (a gray net into RGB) is timm's `base_chans` generalization."""
    weight = np.random.default_rng(base * 10 + channels).normal(0, 0.1, (8, base, 7, 7))
    weight = weight.astype("float32")
    expected = timm.models.adapt_input_conv(channels, torch.from_numpy(weight.copy()),
                                            base_chans=base).numpy()
    torch_layout = keras_resnet.weights.adapt_input_conv(weight, channels, axis=1)
    keras_layout = keras_resnet.weights.adapt_input_conv(weight.transpose(2, 3, 1, 0), channels)
    np.testing.assert_array_equal(torch_layout, expected)
    np.testing.assert_array_equal(keras_layout, expected.transpose(2, 3, 1, 0))


def test_include_preprocessing_averages_constants_for_gray(monkeypatch, tmp_path, torch_resnet18):
    path, _ = torch_resnet18
    _cache_as(monkeypatch, tmp_path, path, "resnet18", "tv_in1k")
    model = keras_resnet.ResNet18(weights="tv_in1k", input_shape=(64, 64, 1),
                                  include_preprocessing=True)
    layer = model.get_layer("preprocessing")
    np.testing.assert_allclose(layer.mean, [np.mean(TORCH_PIXELS[0])], rtol=1e-6)
    np.testing.assert_allclose(layer.std, [np.mean(TORCH_PIXELS[1])], rtol=1e-6)


# ------------------------------------------------------------------- normalization sources


def _cache_as(monkeypatch, tmp_path, path, model, tag):
    """Puts `path` where the registry's fetch looks for `model`/`tag` (timm sets carry no hash)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    row = registry.get(model, tag)
    target = os.path.join(registry.cache_dir(), row.file_name())
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(path, target)
    return row, target


def test_registry_set_from_the_cache(monkeypatch, tmp_path, torch_resnet18):
    path, _ = torch_resnet18
    row, target = _cache_as(monkeypatch, tmp_path, path, "resnet18", "tv_in1k")
    pre = transfer.resolve_pretrained("ResNet18", "tv_in1k")
    assert (pre.model, pre.source, pre.path, pre.license) == ("resnet18", "registry", target,
                                                             "BSD-3-Clause")
    assert (pre.input_size, pre.crop_fraction, pre.classes, pre.bgr_input) == (224, 0.875, 1000,
                                                                               False)
    assert pre.normalization == TORCH_PIXELS and "torch" in pre.normalization_source
    assert pre.sha256 == registry.file_digest(path, "sha256")
    assert json.loads(json.dumps(pre.record()))["normalization"]["mean"] == list(TORCH_PIXELS[0])
    with pytest.raises(ValueError, match=r"contradicts.*tv_in1k.*Drop the normalization option"):
        transfer.resolve_pretrained("resnet18", "tv_in1k", normalization="caffe")
    assert transfer.resolve_pretrained("resnet18", "tv_in1k",
                                       normalization="imagenet").normalization == TORCH_PIXELS


def test_converted_file_takes_the_sidecar(monkeypatch, tmp_path, torch_resnet18):
    path, _ = torch_resnet18
    _cache_as(monkeypatch, tmp_path, path, "resnet18", "tv_in1k")
    h5, side = convert.convert("resnet18", "tv_in1k", str(tmp_path / "out"))
    pre = transfer.resolve_pretrained("resnet18", h5)
    assert pre.source == "file" and pre.normalization == TORCH_PIXELS
    assert pre.normalization_source == f"sidecar {side}"
    assert (pre.license, pre.crop_fraction, pre.input_size) == ("BSD-3-Clause", 0.875, 224)
    # A local file converted without a registry row: the converter writes that it only
    # assumed the preprocessing (convert._sidecar), so the weights do not say.
    meta = json.load(open(side))
    meta.update(source="local file", license="unknown: that of the file's origin")
    meta["preprocessing"]["assumed"] = True
    json.dump(meta, open(side, "w"))
    local = transfer.resolve_pretrained("resnet18", h5)
    assert local.normalization is None and local.license is None and local.input_size is None
    assert convert._sidecar("resnet18", "x", None, path, "0", 1000)["preprocessing"]["assumed"]


def test_bare_file_needs_the_option(resnet20_source):
    path, _, _ = resnet20_source
    pre = transfer.resolve_pretrained("resnet20", path)
    assert pre.normalization is None and pre.license is None and pre.input_size is None
    with pytest.raises(ValueError, match=r"do not say how.*normalization=.*'caffe', 'tf', "
                                         r"'torch', 'imagenet'.*\(mean, std\)"):
        pre.normalization_for(3)
    given = transfer.resolve_pretrained("resnet20", path, normalization=([125.3, 123.0, 113.9],
                                                                         [63.0, 62.1, 66.7]))
    assert given.normalization == ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7))
    assert given.normalization_for(1) == ((np.mean([125.3, 123.0, 113.9]),),
                                          (np.mean([63.0, 62.1, 66.7]),))
    assert given.normalization_for(4).mean == (125.3, 123.0, 113.9, 125.3)
    with pytest.raises(ValueError, match=r"Unknown normalization 'inception'"):
        transfer.resolve_pretrained("resnet20", path, normalization="inception")


def test_keras_model_source_takes_its_normalization_layer(tmp_path):
    """A run's model.keras with a per-pixel mean image: its per-channel average (which is the
    training set's per-channel mean); the model's layers load into a fresh one of 3 classes."""
    mean_image = np.random.default_rng(2).uniform(90, 160, (32, 32, 3))
    source = randomize(train_like_model("resnet20", 32, mean_image))
    path = str(tmp_path / "model.keras")
    source.save(path)
    pre = transfer.resolve_pretrained("resnet20", path)
    np.testing.assert_allclose(pre.normalization.mean, mean_image.mean(axis=(0, 1)), rtol=1e-12)
    assert pre.normalization.std == (1.0, 1.0, 1.0) and pre.input_size == 32
    assert (pre.classes, pre.variant, pre.bgr_input) == (10, "v1.5", False)
    model = train_like_model("resnet20", 32, pre.normalization.mean, classes=3)
    report = transfer.load_pretrained(model, pre)
    assert report.extra_layers == ("mean_subtraction",)
    assert report.layers_left_at_init == ("predictions",)
    assert_layers_equal(model, values(source), [n for n in report.layers_loaded])


def test_bgr_source_becomes_an_rgb_model(tmp_path):
    """A model trained on BGR input (its normalization reverses the channels, as Caffe's): the
    loaded model takes RGB with RGB-ordered constants and gives the source's outputs."""
    bgr_mean = (103.939, 116.779, 123.68)
    source = randomize(train_like_model("resnet20", 32, bgr_mean, std=(58.0, 57.0, 57.5),
                                        reverse=True))
    path = str(tmp_path / "bgr.keras")
    source.save(path)
    pre = transfer.resolve_pretrained("resnet20", path)
    assert pre.bgr_input and pre.normalization == (bgr_mean[::-1], (57.5, 57.0, 58.0))
    model = train_like_model("resnet20", 32, pre.normalization.mean, std=pre.normalization.std)
    report = transfer.load_pretrained(model, pre)
    assert report.adapted == ("conv1_conv",) and report.layers_left_at_init == ()
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(run(model, x), run(source, x),
                               rtol=1e-5, atol=1e-6)  # the same sums, reassociated


# ------------------------------------------------------------------- errors


def test_other_depth_is_a_clear_error_and_loads_nothing(resnet20_source):
    path, _, _ = resnet20_source
    model = keras_resnet.create("resnet32", weights=None, input_shape=(32, 32, 3), classes=10)
    before = values(model)
    with pytest.raises(ValueError, match=r"do not match model 'resnet32'.*nothing was loaded.*"
                                         r"missing in the file: conv2_block4"):
        transfer.load_pretrained(model, transfer.resolve_pretrained("resnet32", path))
    assert_layers_equal(model, before, before)


def test_bad_files_and_names(tmp_path, resnet20_source):
    path, _, _ = resnet20_source
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(open(path, "rb").read()[:2000])
    with pytest.raises(ValueError, match=r"broken.weights.h5 is not a readable Keras weights"):
        transfer.resolve_pretrained("resnet20", str(broken))
    not_zip = tmp_path / "model.keras"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"model.keras is not a readable .keras model"):
        transfer.resolve_pretrained("resnet20", str(not_zip))
    with pytest.raises(ValueError, match=r"No weights file at 'nowhere/w.weights.h5'"):
        transfer.resolve_pretrained("resnet20", "nowhere/w.weights.h5")
    with pytest.raises(ValueError, match=r"No weight set 'in22k' for resnet18; available: "):
        transfer.resolve_pretrained("resnet18", "in22k")
    with pytest.raises(ValueError, match=r"must come from resolve_pretrained"):
        transfer.load_pretrained(keras_resnet.ResNet20(weights=None), path)


def _online(host):
    try:
        socket.create_connection((host, 443), timeout=2).close()
        return True
    except OSError:
        return False


def test_offline_named_set_fails_at_once_naming_url_and_path(monkeypatch, tmp_path):
    row = registry.get("resnet50", "imagenet")
    if _online("storage.googleapis.com"):
        pytest.skip("this machine is online: the test is for offline ones")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(OSError) as caught:
        transfer.resolve_pretrained("resnet50", "imagenet")
    assert time.perf_counter() - start < 5
    expected = os.path.join(str(tmp_path), "models", row.file_name())
    assert row.url in str(caught.value) and f"put it at {expected}" in str(caught.value)
    assert not os.path.exists(expected)


def test_api_is_exported():
    for name in ("resolve_pretrained", "load_pretrained", "PretrainedWeights", "TransferReport"):
        assert getattr(keras_resnet, name) is getattr(transfer, name)
        assert getattr(keras_resnet.weights, name) is getattr(transfer, name)
        assert name in keras_resnet.__all__ and name in keras_resnet.weights.__all__
