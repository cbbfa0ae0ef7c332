"""Pretrained weights: a registry of weight sets, one loader for every file layout, and
transfer learning (`resolve_pretrained`, `load_pretrained`: other classes, other input channels).
"""

from keras_resnet.weights.input_conv import adapt_input_conv
from keras_resnet.weights.loader import assign_weights, load_weights, read_h5, read_weights
from keras_resnet.weights.registry import WeightSet, fetch, get, register, rows, tags
from keras_resnet.weights.transfer import (
    PretrainedWeights,
    TransferReport,
    load_pretrained,
    resolve_pretrained,
)

__all__ = ["PretrainedWeights", "TransferReport", "WeightSet", "adapt_input_conv",
           "assign_weights", "fetch", "get", "load_pretrained", "load_weights", "read_h5",
           "read_weights", "register", "resolve_pretrained", "rows", "tags"]
