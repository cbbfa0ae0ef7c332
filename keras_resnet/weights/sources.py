"""What a weights file says about itself: classes, input channels, graph layout, and the input
normalization it was trained with (from a `.keras` model's normalization layer, or the JSON
sidecar that `keras_resnet.convert` writes beside its output).

Used by `keras_resnet.weights.transfer`; every function reads, none loads into a model.
"""

import json
import os
import zipfile

import numpy as np
from absl import logging

from keras_resnet.preprocessing import Normalization
from keras_resnet.weights import registry
from keras_resnet.weights.input_conv import FIRST_CONV, TORCH_FIRST_CONV
from keras_resnet.weights.loader import TORCH_SUFFIXES, read_keras_file

KERAS_SUFFIXES = (".h5", ".keras")


def file_facts(path):
    """(classes or None, input channels or None, variant) of the network stored in `path`.

    `variant` is the graph layout the file needs: 'v2' (pre-activation: a `post_bn` layer),
    'v1' (conv biases, keras.applications' graph) or 'v1.5' (no conv biases: torchvision/timm).
    """
    if path.endswith(TORCH_SUFFIXES):
        from keras_resnet.weights.torch_checkpoints import read_state_dict

        state = read_state_dict(path)
        fc, conv = state.get("fc.weight"), state.get(TORCH_FIRST_CONV)
        return (None if fc is None else int(np.shape(fc)[0]),
                None if conv is None else int(np.shape(conv)[1]), "v1.5")
    if not path.endswith(KERAS_SUFFIXES):
        raise ValueError(f"Unsupported weights file {path!r}: expected .weights.h5, a legacy "
                         "Keras .h5, a .keras model, .safetensors or .pth.")
    weights = read_keras_file(path)
    head, conv = weights.get("predictions"), weights.get(FIRST_CONV)
    if "post_bn" in weights:
        variant = "v2"
    else:
        variant = "v1" if conv is not None and len(conv) == 2 else "v1.5"
    return (None if head is None else int(np.shape(head[0])[-1]),
            None if conv is None else int(np.shape(conv[0])[2]), variant)


def per_channel(value, channels):
    """A normalization constant (scalar, (C,) or per-pixel (H, W, C)) as `channels` floats.

    A per-pixel mean image (the paper's CIFAR preprocessing, sec. 4.2) becomes its average over
    the image, which is the per-channel mean of the training set it was computed on; it cannot
    be kept per pixel, because the new model's input size may differ.
    """
    array = np.asarray(value, np.float64)
    if array.ndim == 3:
        array = array.mean(axis=(0, 1))
    array = np.broadcast_to(array.reshape(-1), (channels,)) if array.size == 1 else array
    if array.shape != (channels,):
        raise ValueError(f"A normalization constant of shape {np.shape(value)} does not fit "
                         f"{channels} input channels.")
    return tuple(float(v) for v in array)


def keras_model_preprocessing(path, channels):
    """(Normalization in RGB order or None, reverse_channels, input size or None) of a saved
    `.keras` model, from its config: its first `ImageNormalization` layer (a training run's
    'mean_subtraction') and its input layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable .keras model (no config.json): {e}") from e
    layers = config.get("config", {}).get("layers", [])
    inputs = [layer["config"] for layer in layers if layer.get("class_name") == "InputLayer"]
    norms = [layer["config"] for layer in layers if layer.get("class_name") == "ImageNormalization"]
    first = bool(norms) and norms[0].get("data_format") == "channels_first"
    shape = (inputs[0].get("batch_shape") or inputs[0].get("batch_input_shape")) if inputs else None
    height, width = (shape[2:4] if first else shape[1:3]) if shape and len(shape) == 4 else (0, 1)
    size = height if height == width else None
    if not norms:
        return None, False, size
    rev = bool(norms[0].get("reverse_channels", False))
    mean, std = (per_channel(norms[0][key], channels) for key in ("mean", "std"))
    if rev:
        mean, std = mean[::-1], std[::-1]
    return Normalization(mean, std), rev, size


def sidecar_path(path):
    """The JSON beside a converted file: `X.json` for `X.weights.h5` (or `X.<suffix>`)."""
    keras3 = path.endswith(".weights.h5")
    base = path[: -len(".weights.h5")] if keras3 else os.path.splitext(path)[0]
    return base + ".json"


def sidecar(path):
    """The sidecar's dict if one is beside `path` and names it (`keras_file`), else None."""
    side = sidecar_path(path)
    if not os.path.isfile(side):
        return None
    try:
        with open(side) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"The sidecar {side} of {path} is not readable JSON: {e}. Fix or remove "
                         "it.") from e
    named = meta.get("keras_file")
    if named is not None and named != os.path.basename(path):
        logging.warning("Ignoring %s: it describes %s, not %s.", side, named,
                        os.path.basename(path))
        return None
    return meta


def sidecar_preprocessing(meta):
    """(Normalization or None, reverse_channels, input size, crop fraction) from a sidecar.

    Values the converter only assumed (a local file of unknown origin: `assumed: true`) count
    as unknown: None.
    """
    pre = meta.get("preprocessing") or {}
    if not pre or pre.get("assumed"):
        return None, False, None, None
    norm, rev = Normalization.of_mode(pre["mode"], pre.get("mean"), pre.get("std"))
    return norm, rev, pre.get("input_size"), pre.get("crop_fraction")


def registry_row_of_file(model, path):
    """The registry row whose file `path` is (by its published md5), or None: a
    keras.applications file downloaded by hand still says how it was trained."""
    rows = [row for row in registry.rows() if row.model == model and row.layout == "keras_h5"]
    if not rows or not path.endswith(".h5"):
        return None
    digest = registry.file_digest(path, "md5")
    for row in rows:
        if digest in (row.file_hash, row.file_hash_notop):
            return row
    return None
