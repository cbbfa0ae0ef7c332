import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format


def randomize(model, seed=0):
    """Non-trivial weights everywhere, BN statistics included, so a mapping error cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])
        else:
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / max(1, np.prod(w.shape[:-1]))), w.shape)
                               for w in layer.get_weights()])
    return model


def save_legacy_h5(model, path):
    """A weights file in the layout of keras.applications' downloads (Keras 2 HDF5)."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return str(path)


@pytest.fixture
def images():
    rng = np.random.default_rng(1)
    return rng.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
