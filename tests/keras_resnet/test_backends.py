"""The models use keras.ops only: they build and agree under the JAX and PyTorch backends."""

import ast
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
                                    classifier_activation=None,
                                    shortcut="A" if name == "resnet20" else "B")
        model.load_weights(f"{sys.argv[2]}/{name}.weights.h5")
        x = np.load(f"{sys.argv[2]}/{name}_x.npy")
        np.save(f"{sys.argv[2]}/{name}_{sys.argv[1]}.npy",
                keras.ops.convert_to_numpy(model(x, training=False)))
""")


# Logits of the same weights under another backend, max |diff| / max |logit|, measured against
# TF with oneDNN (this CPU's default) / with Eigen (TF_ENABLE_ONEDNN_OPTS=0, the default on
# AVX2-only CPUs): JAX 2.4e-7 / 2.1e-7 (ResNet-20), 1.2e-6 / 5.1e-7 (ResNet-50 at 64 px); torch
# 9.7e-8 / 2.0e-7, 1.4e-6 / 1.0e-6. Float32 epsilon 1.2e-7 grows with depth. Tolerance 1e-5:
# 7x the largest.
BACKEND_TOLERANCE = 1e-5


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_build_and_agree_under_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[test]' installs it)")
    expected = {}
    for name, shape in (("resnet20", (32, 32, 3)), ("resnet50", (64, 64, 3))):
        model = keras_resnet.create(name, weights=None, input_shape=shape, classes=10,
                                    classifier_activation=None)
        x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
        model.save_weights(tmp_path / f"{name}.weights.h5")
        np.save(tmp_path / f"{name}_x.npy", x)
        expected[name] = np.asarray(model(x, training=False))
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", SCRIPT, backend, str(tmp_path)], env=env, check=True,
                   timeout=600)
    for name, want in expected.items():
        got = np.load(tmp_path / f"{name}_{backend}.npy")
        rel = np.abs(got - want).max() / np.abs(want).max()
        print(backend, name, f"max |diff| / max |logit| {rel:.1e}")
        assert rel <= BACKEND_TOLERANCE, (backend, name, rel)


def _tensorflow_imports(path):
    """[(enclosing function or '<module>', line)] of every tensorflow import in a file."""
    tree = ast.parse(open(path).read())
    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            inner = child.name if function else where
            names = [a.name for a in child.names] if isinstance(child, ast.Import) else \
                [child.module or ""] if isinstance(child, ast.ImportFrom) else []
            if any(n == "tensorflow" or n.startswith("tensorflow.") for n in names):
                found.append((where, child.lineno))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_model_library_never_imports_tensorflow():
    root = os.path.dirname(keras_resnet.__file__)
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                for where, line in _tensorflow_imports(os.path.join(dirpath, f)):
                    found[f"{os.path.relpath(os.path.join(dirpath, f), root)}:{line}"] = where
    assert found == {}, found  # TensorFlow-only code lives in train/ and export/ (DESIGN.md)


NO_TENSORFLOW = textwrap.dedent("""
    import sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"{name} is blocked: keras_resnet must not need it")

    sys.meta_path.insert(0, NoTensorFlow())
    import numpy as np, keras, keras_resnet
    assert keras.backend.backend() == "jax"
    model = keras_resnet.ResNet50(weights=None)
    out = keras.ops.convert_to_numpy(model(np.zeros((1, 224, 224, 3), "float32")))
    assert out.shape == (1, 1000)
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    assert keras.ops.convert_to_numpy(model(x, training=True)).shape == (4, 10)
    # FusedBatchNormalization falls back to the parent under JAX: bitwise the same training step.
    fused = keras_resnet.FusedBatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    y = np.random.default_rng(1).normal(2, 3, (4, 8, 8, 16)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(l(y, training=True)) for l in (fused, plain))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fused.moving_variance),
                                  keras.ops.convert_to_numpy(plain.moving_variance))
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    print("built without tensorflow")
""")


def test_builds_and_runs_under_jax_with_tensorflow_blocked():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "built without tensorflow" in proc.stdout, proc.stderr[-3000:]
