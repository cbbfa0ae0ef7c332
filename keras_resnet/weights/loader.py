"""One loader: read any supported file into {layer name: [arrays]}, verify all, then assign.

Layouts: Keras 3 `.weights.h5`, legacy Keras 2 `.h5` (keras.applications' files), and PyTorch
checkpoints (`.safetensors`, `.pth`) through `keras_resnet.weights.torch_checkpoints`.
Nothing is assigned unless every layer of the model matches, so a bad file never leaves a
half-loaded model.
"""

import os

import h5py
import numpy as np

from keras_resnet.weights.mismatch import mismatch_problems

TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _read_legacy(group):
    out = {}
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else str(name)
        wnames = group[name].attrs.get("weight_names", [])
        arrays = [np.asarray(group[name][w.decode() if isinstance(w, bytes) else w]) for w in wnames]
        if arrays:
            out[name] = arrays
    return out


def _read_keras3(group, out):
    for key, sub in group.items():
        if not isinstance(sub, h5py.Group):
            continue
        vars_ = sub.get("vars")
        if isinstance(vars_, h5py.Group) and len(vars_):
            name = vars_.attrs.get("name", key)
            name = name.decode() if isinstance(name, bytes) else str(name)
            out[name] = [np.asarray(vars_[k]) for k in sorted(vars_, key=int)]
        if "layers" in sub:
            _read_keras3(sub["layers"], out)
    return out


def read_h5(path):
    """{layer name: [arrays in Keras weight order]} from a Keras 3 or legacy Keras 2 `.h5` file."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in group.attrs:
                return _read_legacy(group)
            if "layers" in group:
                return _read_keras3(group["layers"], {})
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path} is not a readable Keras weights file (truncated or corrupt?): {e}"
        ) from e
    raise ValueError(f"{path} is an HDF5 file but holds no Keras weights (no layer_names, no layers/).")


def assign_weights(model, weights):
    """Sets every weighted layer of `model` from `weights` ({layer name: [arrays]}).

    Checks everything first: missing layers, unexpected layers (a classifier in the file is
    ignored when the model has none) and shape mismatches all raise one ValueError that names
    them, before any variable changes.
    """
    expected = {layer.name: layer for layer in model.layers if layer.weights}
    given = dict(weights)
    if "predictions" in given and "predictions" not in expected:
        given.pop("predictions")
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = []
    for name in sorted(set(expected) & set(given)):
        want = [tuple(w.shape) for w in expected[name].weights]
        got = [tuple(np.shape(a)) for a in given[name]]
        if want != got:
            mismatched.append(f"{name}: model {want} vs file {got}")
    if missing or unexpected or mismatched:
        problems = mismatch_problems(missing, unexpected, mismatched, shown=8)
        raise ValueError(
            f"The weights do not match model {model.name!r} (is it the same architecture, depth "
            f"and class count?); nothing was loaded. " + "; ".join(problems)
        )
    for name, layer in expected.items():
        layer.set_weights(given[name])


def read_weights(path, model):
    """{layer name: [arrays]} from any supported file; PyTorch files are mapped onto `model`."""
    if not os.path.isfile(path):
        raise ValueError(f"No weights file at {path!r}.")
    if path.endswith(TORCH_SUFFIXES):
        from keras_resnet.weights import torch_checkpoints

        return torch_checkpoints.torch_state_dict_to_keras(
            torch_checkpoints.read_state_dict(path), model)
    if path.endswith(".h5"):
        return read_h5(path)
    raise ValueError(
        f"Unsupported weights file {path!r}: expected .weights.h5, a legacy Keras .h5, "
        ".safetensors or .pth."
    )


def load_weights(model, weights, weight_set=None):
    """Loads a path, or the registry row `weight_set` (downloaded once into the Keras cache)."""
    if weight_set is not None:
        from keras_resnet.weights.registry import fetch

        include_top = any(layer.name == "predictions" for layer in model.layers)
        weights = fetch(weight_set, include_top=include_top)
    assign_weights(model, read_weights(weights, model))
    return model
