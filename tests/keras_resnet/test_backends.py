"""The models use keras.ops only: they build and agree under the JAX and PyTorch backends."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_resnet

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, keras, keras_resnet
    assert keras.backend.backend() == sys.argv[1]
    for name, shape in (("resnet20", (32, 32, 3)), ("resnet50", (64, 64, 3))):
        model = keras_resnet.create(name, weights=None, input_shape=shape, classes=10,
                                    shortcut="A" if name == "resnet20" else "B")
        model.load_weights(f"{sys.argv[2]}/{name}.weights.h5")
        x = np.load(f"{sys.argv[2]}/{name}_x.npy")
        np.save(f"{sys.argv[2]}/{name}_{sys.argv[1]}.npy", keras.ops.convert_to_numpy(model(x, training=False)))
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_build_and_agree_under_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[test]' installs it)")
    expected = {}
    for name, shape in (("resnet20", (32, 32, 3)), ("resnet50", (64, 64, 3))):
        model = keras_resnet.create(name, weights=None, input_shape=shape, classes=10)
        x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
        model.save_weights(tmp_path / f"{name}.weights.h5")
        np.save(tmp_path / f"{name}_x.npy", x)
        expected[name] = np.asarray(model(x, training=False))
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", SCRIPT, backend, str(tmp_path)], env=env, check=True,
                   timeout=600)
    for name, want in expected.items():
        got = np.load(tmp_path / f"{name}_{backend}.npy")
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_model_library_has_no_tensorflow_imports():
    root = os.path.dirname(keras_resnet.__file__)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                assert "import tensorflow" not in text and "from tensorflow" not in text, f
