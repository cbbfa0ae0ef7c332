"""Pretrained weights: a registry of weight sets and one loader for every file layout."""

from keras_resnet.weights.loader import assign_weights, load_weights, read_h5, read_weights
from keras_resnet.weights.registry import WeightSet, fetch, get, register, rows, tags

__all__ = ["WeightSet", "assign_weights", "fetch", "get", "load_weights", "read_h5",
           "read_weights", "register", "rows", "tags"]
