"""One loader: read any supported file into {layer name: [arrays]}, verify all, then assign.

Layouts: Keras 3 `.weights.h5`, legacy Keras 2 `.h5` (keras.applications' files), and PyTorch
checkpoints (`.safetensors`, `.pth`) through `keras_resnet.weights.torch_checkpoints`.
Nothing is assigned unless every layer of the model matches, so a bad file never leaves a
half-loaded model. The first conv's kernel is fitted to the model's input channels by timm's
rule (`keras_resnet.weights.input_conv`), so RGB weights load into 1- or 4-channel models.
"""

import os

import h5py
import numpy as np
from absl import logging

from keras_resnet.weights.input_conv import FIRST_CONV, TORCH_FIRST_CONV, adapt_input_conv
from keras_resnet.weights.mismatch import mismatch_problems

TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _read_legacy(group):
    out = {}
    for name in group.attrs["layer_names"]:
        name = name.decode() if isinstance(name, bytes) else str(name)
        wnames = group[name].attrs.get("weight_names", [])
        arrays = [np.asarray(group[name][w.decode() if isinstance(w, bytes) else w])
                  for w in wnames]
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
    raise ValueError(f"{path} is an HDF5 file but holds no Keras weights (no layer_names, no "
                     "layers/).")


def assign_weights(model, weights, skip=()):
    """Sets every weighted layer of `model` from `weights` ({layer name: [arrays]}).

    Checks everything first: missing layers, unexpected layers (a classifier in the file is
    ignored when the model has none) and shape mismatches all raise one ValueError that names
    them, before any variable changes. Layers named in `skip` keep their values (their entries in
    `weights`, if any, are ignored).
    """
    expected = {layer.name: layer for layer in model.layers if layer.weights
                and layer.name not in skip}
    given = {name: arrays for name, arrays in weights.items() if name not in skip}
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


def input_channels(model):
    """Channels the model's first conv (`conv1_conv`) takes, or None if it has none."""
    names = {layer.name: layer for layer in model.layers}
    layer = names.get(FIRST_CONV)
    return None if layer is None or not layer.weights else int(layer.weights[0].shape[2])


def _fit_first_conv(arrays, key, channels, axis, reverse):
    """Fits `arrays[key]` (a first-conv kernel) to `channels` input channels, in place."""
    kernel = arrays.get(key)
    if kernel is None or channels is None or np.ndim(kernel) != 4:
        return
    if np.shape(kernel)[axis] != channels or reverse:
        logging.info("First conv %s: %d input channels -> %d%s (timm's adapt_input_conv rule).",
                     key, np.shape(kernel)[axis], channels, ", reversed" if reverse else "")
        arrays[key] = adapt_input_conv(kernel, channels, axis=axis, reverse=reverse)


def read_weights(path, model, *, skip=(), reverse_input_channels=False):
    """{layer name: [arrays]} for `model` from any supported file (PyTorch files are mapped onto
    its layers).

    The first conv's kernel is fitted to the model's input channels (`adapt_input_conv`), after
    reversing its input channels if `reverse_input_channels` (BGR-trained weights into a model
    that takes RGB). Layers named in `skip` are left out of the result.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No weights file at {path!r}.")
    channels = input_channels(model)
    if path.endswith(TORCH_SUFFIXES):
        from keras_resnet.weights import torch_checkpoints

        state = torch_checkpoints.read_state_dict(path)
        _fit_first_conv(state, TORCH_FIRST_CONV, channels, 1, reverse_input_channels)
        return torch_checkpoints.torch_state_dict_to_keras(state, model, skip=skip)
    if path.endswith((".h5", ".keras")):
        weights = read_keras_file(path)
        first = weights.get(FIRST_CONV)
        if first:
            kernel = {FIRST_CONV: first[0]}
            _fit_first_conv(kernel, FIRST_CONV, channels, 2, reverse_input_channels)
            weights[FIRST_CONV] = [kernel[FIRST_CONV], *first[1:]]
        return {name: arrays for name, arrays in weights.items() if name not in skip}
    raise ValueError(
        f"Unsupported weights file {path!r}: expected .weights.h5, a legacy Keras .h5, "
        "a .keras model, .safetensors or .pth."
    )


def read_keras_file(path):
    """{layer name: [arrays]} from a `.h5` weights file or a `.keras` model (its weights)."""
    if not str(path).endswith(".keras"):
        return read_h5(path)
    import io
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f:
            data = io.BytesIO(f.read())
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"{path} is not a readable .keras model (a zip holding "
                         f"model.weights.h5): {e}") from e
    try:
        return read_h5(data)
    except ValueError as e:
        raise ValueError(f"{path}: its model.weights.h5 holds no readable Keras weights "
                         f"({e}).") from e


def load_weights(model, weights, weight_set=None):
    """Loads a path, or the registry row `weight_set` (downloaded once into the Keras cache).

    Every layer must match, except the first conv, fitted to the model's input channels. For
    other class counts and a report of what was loaded, see `keras_resnet.weights.transfer`.
    """
    if weight_set is not None:
        from keras_resnet.weights.registry import fetch

        include_top = any(layer.name == "predictions" for layer in model.layers)
        weights = fetch(weight_set, include_top=include_top)
    assign_weights(model, read_weights(weights, model))
    return model
