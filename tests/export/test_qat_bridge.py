"""The Keras 3 -> tf_keras bridge: same function, same names, weights carried."""

import keras
import numpy as np
import pytest
import tf_keras

import keras_resnet
from export import bridge, qat
from tests.keras_resnet.conftest import randomize


def _images(shape, n=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def test_twin_of_the_trained_cifar_net(keras_model, held_out):
    images = held_out.eval_inputs
    twin = bridge.to_tf_keras(keras_model)
    assert isinstance(twin, tf_keras.Model)
    k3 = {layer.name for layer in keras_model.layers if layer.weights}
    assert k3 <= {layer.name for layer in twin.layers}
    np.testing.assert_allclose(twin.predict(images[:100], verbose=0),
                               keras_model.predict(images[:100], verbose=0), atol=1e-5)


def test_twin_of_a_nested_imagenet_net_with_preprocessing():
    """7x7 stem, max-pool, projection shortcuts, ImageNormalization, a nested model."""
    inner = randomize(keras_resnet.build_resnet(
        [(8, 1, 1), (16, 1, 2)], "basic", stem="imagenet", layout="v1.5",
        include_preprocessing=True, preprocessing=((120.0, 110.0, 100.0), (60.0, 60.0, 60.0),
                                                   True),
        input_shape=(64, 64, 3), classes=5))
    inputs = keras.Input((64, 64, 3))
    outer = keras.Model(inputs, keras.layers.Softmax()(inner(inputs)))
    twin = bridge.to_tf_keras(outer)
    images = _images((64, 64, 3))
    np.testing.assert_allclose(twin(images).numpy(), outer(images).numpy(), atol=1e-5)


def test_bottleneck_net_with_option_a_and_b_shortcuts():
    model = randomize(keras_resnet.build_resnet(
        [(4, 1, 1), (8, 2, 2)], "bottleneck", stem="cifar", shortcut="A", input_shape=(16, 16, 1),
        classes=3))
    images = _images((16, 16, 1))
    np.testing.assert_allclose(bridge.to_tf_keras(model)(images).numpy(), model(images).numpy(),
                               atol=1e-4)


def test_quantized_twin_calibrates_to_the_float_model(keras_model, held_out):
    images = held_out.eval_inputs
    qat_model = qat.quantize(keras_model)
    qat.calibrate_ranges(qat_model, images[-256:])
    expected = keras_model.predict(images[:300], verbose=0).argmax(-1)
    agreement = np.mean(qat_model.predict(images[:300], verbose=0).argmax(-1) == expected)
    assert agreement >= 0.95, agreement


def test_a_layer_without_twin_is_named():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="ln")(inputs))
    with pytest.raises(ValueError, match="'ln' of class LayerNormalization has no tf_keras twin"):
        bridge.to_tf_keras(model)
