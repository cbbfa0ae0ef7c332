"""Input preprocessing and ImageNet label decoding, offline.

Each weight set was trained with one preprocessing mode; using another silently costs accuracy:
- "caffe": RGB -> BGR, subtract the ImageNet mean per channel, no scaling
  (keras.applications ResNet50/101/152 "imagenet", He et al.'s original Caffe models).
- "tf": scale to [-1, 1] (keras.applications ResNet50V2/101V2/152V2 "imagenet").
- "torch": scale to [0, 1], subtract mean and divide by std per channel (torchvision, timm).
"""

import json
import os
from typing import NamedTuple

import numpy as np
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODES = {
    # mode: (mean, std, reverse_channels), mean/std in pixel units of the (possibly reversed) input.
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), False),
    "torch": (
        tuple(255.0 * m for m in IMAGENET_MEAN),
        tuple(255.0 * s for s in IMAGENET_STD),
        False,
    ),
}


def normalization_constants(mode, mean=None, std=None):
    """(mean, std, reverse_channels) in pixel units for a mode; "torch" takes custom [0,1]
    mean/std."""
    if mode not in MODES:
        raise ValueError(
            f"Unknown preprocessing mode {mode!r}: expected one of {sorted(MODES)} "
            "(or a weight tag such as 'imagenet' or 'tv2_in1k' through the model's registry)."
        )
    m, s, rev = MODES[mode]
    if mode == "torch" and mean is not None:
        m = tuple(255.0 * v for v in mean)
        s = tuple(255.0 * v for v in std)
    return m, s, rev


class Normalization(NamedTuple):
    """Per-channel input normalization `(x - mean) / std` in pixel units (0..255), RGB order.

    Unpacks as `mean, std = n`, so `keras_resnet.ImageNormalization(*n)` builds its layer.
    """

    mean: tuple
    std: tuple

    @classmethod
    def of_mode(cls, mode, mean=None, std=None):
        """(Normalization in RGB order, reverse_channels) of a preprocessing mode: 'caffe'
        (whose weights take BGR: its constants come back in RGB order, reverse True), 'tf',
        'torch', or 'imagenet' (ImageNet's mean and std, as 'torch')."""
        m, s, rev = normalization_constants("torch" if mode == "imagenet" else mode, mean, std)
        if rev:
            m, s = m[::-1], s[::-1]
        return cls(tuple(float(v) for v in m), tuple(float(v) for v in s)), rev

    def for_channels(self, channels: int) -> "Normalization":
        """The constants for a `channels`-channel input, as the first conv is adapted
        (`keras_resnet.weights.input_conv`): 1 channel takes the average over channels; more
        repeat the values in order (R, G, B, R, ...); a single value serves every channel."""
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        if mean.size == channels and std.size == channels:
            return Normalization(tuple(map(float, mean)), tuple(map(float, std)))
        if channels == 1:
            return Normalization((float(mean.mean()),), (float(std.mean()),))
        return Normalization(tuple(float(mean[i % mean.size]) for i in range(channels)),
                             tuple(float(std[i % std.size]) for i in range(channels)))


def preprocess_input(x, mode="caffe", mean=None, std=None):
    """Normalizes RGB images in [0, 255], shape (..., H, W, 3), for a weight set's `mode`.

    Numpy in, float32 numpy out; a backend tensor in, a tensor out. `mode` may also be a weight
    set (`keras_resnet.weights.get("resnet50", "imagenet")`), whose mode and constants are used.
    `mean`/`std` (in [0, 1] units) override the "torch" constants, as some timm sets use their own.
    """
    if hasattr(mode, "preprocessing"):
        mode, mean, std = mode.preprocessing, mode.mean, mode.std
    m, s, rev = normalization_constants(mode, mean, std)
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x, dtype=np.float32)
        if rev:
            x = x[..., ::-1]
        return ((x - np.asarray(m, np.float32)) / np.asarray(s, np.float32)).astype(np.float32)
    x = ops.cast(x, "float32")
    if rev:
        x = ops.flip(x, axis=-1)
    return (x - ops.convert_to_tensor(m, "float32")) / ops.convert_to_tensor(s, "float32")


_CLASS_INDEX = None


def imagenet_class_index():
    """{index: (wordnet id, name)} for the 1000 ImageNet-1k classes, shipped with the package."""
    global _CLASS_INDEX
    if _CLASS_INDEX is None:
        path = os.path.join(os.path.dirname(__file__), "data", "imagenet_class_index.json")
        with open(path) as f:
            _CLASS_INDEX = {int(k): tuple(v) for k, v in json.load(f).items()}
    return _CLASS_INDEX


def decode_predictions(preds, top=5):
    """(B, 1000) scores -> per image a list of `top` tuples (wordnet id, class name, score)."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "decode_predictions expects a batch of ImageNet predictions of shape (samples, 1000); "
            f"received shape {preds.shape}."
        )
    index = imagenet_class_index()
    results = []
    for p in preds:
        best = np.argsort(p)[::-1][:top]
        results.append([(*index[int(i)], float(p[i])) for i in best])
    return results
