"""Bad input gets a clear error, and a bad weights file never leaves a half-loaded model."""

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.weights import registry

from .conftest import randomize, save_legacy_h5


def weights_of(model):
    return [w.numpy().copy() for w in model.weights]


def assert_unchanged(model, before):
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, message", [
    (lambda: keras_resnet.ResNet(21), r"Unknown ResNet depth 21: ImageNet depths are \[18, 34"),
    (lambda: keras_resnet.ResNet(20, cifar=False), r"Unknown ImageNet ResNet depth 20.*cifar=True"),
    (lambda: keras_resnet.ResNet(21, cifar=True), r"6n\+2.*depth=21"),
    (lambda: keras_resnet.ResNet20(weights=None, shortcut="D"),
     r"Unknown shortcut option 'D'.*'A', 'B', 'C', None"),
    (lambda: keras_resnet.ResNet50(weights=None, variant="v3"), r"Unknown variant 'v3'"),
    (lambda: keras_resnet.ResNet50(weights=None, input_shape=(16, 16, 3), include_top=False),
     r"at least 32x32.*\(16, 16, 3\)"),
    (lambda: keras_resnet.ResNet50(classes=10), r"'imagenet' have 1000 classes.*classes=10"),
    (lambda: keras_resnet.ResNet50(weights=None, input_shape=(None, None, 3)), r"static shape"),
    (lambda: keras_resnet.ResNet50(weights=None, pooling="mean", include_top=False),
     r"Unknown pooling 'mean'"),
    (lambda: keras_resnet.ResNet18(weights="in22k"),
     r"No weight set 'in22k' for resnet18; available: .*a1_in1k"),
    (lambda: keras_resnet.ResNet50(weights="missing/file.h5"), r"no such file"),
    (lambda: keras_resnet.ResNet50(classifier_activation="sigmoid"), r"None or 'softmax'"),
    (lambda: keras_resnet.ResNet50V2(weights=None, variant="v1"), r"pre-activation"),
    (lambda: keras_resnet.ResNet50(weights="imagenet", variant="v1.5"), r"need the 'v1' graph"),
    (lambda: keras_resnet.ResNet50(weights=None, include_preprocessing=True), r"named weight set"),
    (lambda: keras_resnet.build_resnet([(64, 0, 1)], "basic"), r"\(filters, blocks, stride\)"),
    (lambda: keras_resnet.build_resnet([(64, 2, 1)], "triple"), r"Unknown block 'triple'"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory):
    model = randomize(keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10))
    path = str(tmp_path_factory.mktemp("w") / "resnet20.weights.h5")
    model.save_weights(path)
    return path, model


def test_keras3_weights_file_roundtrip(resnet20_file):
    path, source = resnet20_file
    model = keras_resnet.ResNet20(weights=path, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), source.predict(x, verbose=0))


def test_wrong_class_count_names_the_layer_and_loads_nothing(resnet20_file):
    path, _ = resnet20_file
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=100)
    before = weights_of(model)
    with pytest.raises(ValueError, match=r"nothing was loaded.*predictions: model \[\(64, 100\)"):
        keras_resnet.weights.load_weights(model, path)
    assert_unchanged(model, before)


def test_wrong_architecture_names_missing_layers_and_loads_nothing(resnet20_file):
    path, _ = resnet20_file
    model = keras_resnet.ResNet32(weights=None, input_shape=(32, 32, 3), classes=10)
    before = weights_of(model)
    with pytest.raises(ValueError, match=r"missing in the file: conv2_block4_1_bn"):
        keras_resnet.weights.load_weights(model, path)
    assert_unchanged(model, before)


def test_resnet50_file_into_resnet101_is_refused(tmp_path):
    ref = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    path = save_legacy_h5(ref, tmp_path / "r50.h5")
    with pytest.raises(ValueError, match=r"missing in the file: conv4_block10_1_bn"):
        keras_resnet.ResNet101(weights=path, include_top=False, input_shape=(64, 64, 3))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_or_truncated_file_is_a_clear_error(resnet20_file, tmp_path, damage):
    path, _ = resnet20_file
    data = open(path, "rb").read()
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not hdf5" * 100)
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10)
    before = weights_of(model)
    with pytest.raises(ValueError,
                       match=r"not a readable Keras weights file \(truncated or corrupt\?\)"):
        keras_resnet.weights.load_weights(model, str(bad))
    assert_unchanged(model, before)


def test_hash_mismatch_in_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    row = registry.get("resnet50", "imagenet")
    (tmp_path / "models").mkdir()
    bad = tmp_path / "models" / row.file_name(include_top=False)
    bad.write_bytes(b"\x89HDF\r\n" + b"0" * 100)
    with pytest.raises(ValueError,
                       match=r"Hash mismatch.*expected 4d473c1dd8becc155b73f8504c6f6626"):
        keras_resnet.ResNet50(include_top=False, input_shape=(64, 64, 3))


def test_offline_without_cached_file_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    row = registry.get("resnet50", "imagenet")
    unreachable = registry.dataclasses.replace(
        row, url_notop="http://127.0.0.1:9/" + row.file_name(False))
    monkeypatch.setitem(registry._REGISTRY, ("resnet50", "imagenet"), unreachable)
    expected_place = str(tmp_path / "models" / row.file_name(False))
    with pytest.raises(OSError, match=r"Could not download.*"
                                      r"resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5"
                                      r".*http://127\.0\.0\.1:9/.*put it at " + expected_place):
        keras_resnet.ResNet50(include_top=False, input_shape=(64, 64, 3))
    assert not (tmp_path / "models" / row.file_name(False)).exists()
