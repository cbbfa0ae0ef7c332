"""keras.applications weight files load into our models and give the same outputs."""

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.weights import registry

from .conftest import randomize, save_legacy_h5

# The deepest three are slow-marked (about 60 s of the default suite on 2 cores): their layer
# names follow the same stage stacker as ResNet101's (conv4_block1..23) and ResNet50V2's.
_DEEP = pytest.mark.slow
PAIRS = [
    (keras.applications.ResNet50, keras_resnet.ResNet50, "caffe"),
    (keras.applications.ResNet101, keras_resnet.ResNet101, "caffe"),
    pytest.param(keras.applications.ResNet152, keras_resnet.ResNet152, "caffe", marks=_DEEP),
    (keras.applications.ResNet50V2, keras_resnet.ResNet50V2, "tf"),
    pytest.param(keras.applications.ResNet101V2, keras_resnet.ResNet101V2, "tf", marks=_DEEP),
    pytest.param(keras.applications.ResNet152V2, keras_resnet.ResNet152V2, "tf", marks=_DEEP),
]


@pytest.mark.parametrize("reference, ours, mode", PAIRS, ids=lambda p: getattr(p, "__name__", p))
def test_legacy_h5_loads_into_both_with_equal_outputs(tmp_path, images, reference, ours, mode):
    ref = randomize(reference(weights=None, classifier_activation=None))
    path = save_legacy_h5(ref, tmp_path / "weights_tf_dim_ordering_tf_kernels.h5")
    ref_loaded = reference(weights=path, classifier_activation=None)
    model = ours(weights=path, classifier_activation=None)
    x = keras_resnet.preprocess_input(images, mode=mode)
    expected = ref_loaded.predict(x, verbose=0)
    got = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 1.0  # logits, not a saturated softmax
    # Bitwise: both graphs run the same Keras ops in the same order on the same weights (our BN
    # layer's inference path is keras.layers.BatchNormalization's). Measured max |diff| 0 for
    # all six nets with oneDNN and with TF_ENABLE_ONEDNN_OPTS=0 (Eigen).
    np.testing.assert_array_equal(got, expected)
    assert [l.name for l in model.layers if l.weights] == [l.name for l in ref.layers if l.weights]


def test_notop_file_loads_with_pooling(tmp_path):
    ref = randomize(keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                                input_shape=(96, 96, 3)), seed=3)
    path = save_legacy_h5(ref, tmp_path / "notop.h5")
    model = keras_resnet.ResNet50(weights=path, include_top=False, pooling="avg",
                                  input_shape=(96, 96, 3))
    x = np.random.default_rng(2).normal(0, 50, (2, 96, 96, 3)).astype("float32")
    expected = ref.predict(x, verbose=0)
    # Bitwise, as above (measured 0 with oneDNN and with Eigen).
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


def test_imagenet_tag_uses_keras_cache_and_hash(tmp_path, monkeypatch):
    """weights="imagenet" reads keras.applications' file name from the Keras cache, verified."""
    ref = randomize(keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                                input_shape=(64, 64, 3)))
    row = registry.get("resnet50", "imagenet")
    cache = tmp_path / "models"
    cache.mkdir()
    path = save_legacy_h5(ref, cache / row.file_name(include_top=False))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setitem(registry._REGISTRY, ("resnet50", "imagenet"),
                        registry.dataclasses.replace(
                            row, file_hash_notop=registry.file_digest(path, "md5")))
    model = keras_resnet.ResNet50(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(0, 50, (1, 64, 64, 3)).astype("float32")
    expected = ref.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)  # bitwise, as above
