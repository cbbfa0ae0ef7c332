"""preprocess_input, include_preprocessing and decode_predictions, against keras.applications."""

import os

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_resnet
from keras_resnet.layers import ImageNormalization
from keras_resnet.preprocessing import normalization_constants


@pytest.mark.parametrize("mode, reference", [
    ("caffe", keras.applications.resnet.preprocess_input),
    ("tf", keras.applications.resnet_v2.preprocess_input),
])
def test_preprocess_input_matches_keras_applications(mode, reference):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    # "caffe" subtracts the same float32 constants: measured 0. "tf" computes (x - 127.5) / 127.5
    # where keras.applications computes x / 127.5 - 1: one rounding each on values in [-1, 1],
    # at most 2 ulp of 1 = 2.4e-7; measured 6e-8, with oneDNN and without (numpy either way).
    np.testing.assert_allclose(keras_resnet.preprocess_input(x, mode=mode), reference(x.copy()),
                               atol=2.4e-7, rtol=0)


def test_torch_mode_matches_torchvision_normalization():
    x = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    expected = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    # float64 reference; ours rounds the constants and two float32 operations on values up to
    # |2.6| (ulp 2.4e-7): a few ulp. Measured 2.2e-7 both ways (numpy); tolerance 1e-6.
    np.testing.assert_allclose(keras_resnet.preprocess_input(x, mode="torch"), expected,
                               atol=1e-6, rtol=0)


def test_normalization_layer_equals_preprocess_input_and_is_safe_to_load(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    for mode in ("caffe", "tf", "torch"):
        layer = ImageNormalization(*normalization_constants(mode))
        # The same float32 subtract and divide as numpy's: bitwise (measured 0 both ways).
        np.testing.assert_array_equal(np.asarray(layer(x)), keras_resnet.preprocess_input(x, mode))
    model = keras.Sequential([keras.Input((8, 8, 3)),
                              ImageNormalization(*normalization_constants("caffe"))])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown preprocessing mode 'bgr'"):
        keras_resnet.preprocess_input(np.zeros((1, 2, 2, 3)), mode="bgr")


def test_class_index_follows_imagenet_wordnet_order():
    path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    wnids = open(path).read().split()
    index = keras_resnet.preprocessing.imagenet_class_index()
    assert [index[i][0] for i in range(1000)] == wnids
    assert index[0][1] == "tench" and index[1][1] == "goldfish"


def test_decode_predictions_offline():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 1], preds[0, 0], preds[1, 999] = 0.9, 0.05, 0.7
    decoded = keras_resnet.decode_predictions(preds, top=2)
    # float32(0.9) is 2.4e-8 off 0.9
    assert decoded[0][0] == ("n01443537", "goldfish", pytest.approx(0.9))
    assert decoded[0][1][:2] == ("n01440764", "tench")
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")
    with pytest.raises(ValueError, match=r"shape \(2, 10\)"):
        keras_resnet.decode_predictions(np.zeros((2, 10)))
