"""The one bridge from Keras 3 to tf_keras, which QAT and pruning (TFMOT 0.8) need.

TFMOT 0.8 quantizes and prunes only `tf_keras` (Keras 2) models; ours are Keras 3.
`to_tf_keras` rebuilds a Keras 3 functional model layer by layer in `tf_keras` (nested models
are flattened), keeping every layer's name and carrying each layer's weights to its twin; the
twin computes the same function (to float rounding).
"""

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

import keras_resnet

_TWIN_PACKAGE = "keras_resnet_tf_keras"


# ------------------------------------------------------------------ tf_keras twins of our layers


@tf_keras.utils.register_keras_serializable(package=_TWIN_PACKAGE)
class ZeroPadShortcut(tf_keras.layers.Layer):
    """tf_keras twin of `keras_resnet.layers.ZeroPadShortcut` (option-A shortcut)."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.filters - x.shape[-1]
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@tf_keras.utils.register_keras_serializable(package=_TWIN_PACKAGE)
class Standardize(tf_keras.layers.Layer):
    """`((x[..., ::-1] if reverse_channels else x) - mean) / std` with mean and std as weights.

    The tf_keras twin of both `keras.layers.Normalization` (fixed mean/variance) and
    `keras_resnet.layers.ImageNormalization`; `shape` is the broadcast shape of mean and std.
    """

    def __init__(self, shape, reverse_channels=False, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(int(s) for s in shape)
        self.reverse_channels = bool(reverse_channels)

    def build(self, input_shape):
        self.mean = self.add_weight("mean", self.shape, initializer="zeros", trainable=False)
        self.std = self.add_weight("std", self.shape, initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, x):
        x = tf.cast(x, self.dtype)
        if self.reverse_channels:
            x = tf.reverse(x, axis=[-1])
        return (x - self.mean) / self.std

    def get_config(self):
        return {**super().get_config(), "shape": self.shape,
                "reverse_channels": self.reverse_channels}


TWIN_OBJECTS = {"ZeroPadShortcut": ZeroPadShortcut, "Standardize": Standardize}


# ------------------------------------------------------------------------ layer translation


def _cfg(layer, *keys):
    config = layer.get_config()
    return {k: config[k] for k in keys if k in config}


def _standardize_normalization(layer):
    """keras.layers.Normalization -> Standardize with its mean and max(sqrt(var), eps)."""
    if getattr(layer, "invert", False):
        raise ValueError(f"Layer {layer.name!r}: Normalization(invert=True) has no tf_keras twin.")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float32)
    var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float32)
    std = np.maximum(np.sqrt(var), keras.config.epsilon()).astype(np.float32)
    return Standardize(mean.shape, name=layer.name), [mean, std]


def _broadcast_nhwc(values):
    """Per-channel (C,) or scalar -> (1, 1, 1, C); per-pixel (H, W, C) -> (1, H, W, C)."""
    values = np.asarray(values, np.float32)
    return values.reshape((1,) + values.shape) if values.ndim == 3 else \
        values.reshape(1, 1, 1, -1)


def _standardize_image_normalization(layer):
    mean, std = np.broadcast_arrays(_broadcast_nhwc(layer.mean), _broadcast_nhwc(layer.std))
    return Standardize(mean.shape, layer.reverse_channels, name=layer.name), \
        [np.ascontiguousarray(mean), np.ascontiguousarray(std)]


def _same(tfk_class, *keys):
    """A translation that rebuilds the layer from the named config keys; weights carried as-is."""
    return lambda layer: (tfk_class(name=layer.name, **_cfg(layer, *keys)), None)


L, T = keras.layers, tf_keras.layers
TRANSLATIONS = {
    L.Conv2D: _same(T.Conv2D, "filters", "kernel_size", "strides", "padding", "dilation_rate",
                    "groups", "activation", "use_bias"),
    L.DepthwiseConv2D: _same(T.DepthwiseConv2D, "kernel_size", "strides", "padding",
                             "depth_multiplier", "dilation_rate", "activation", "use_bias"),
    L.Dense: _same(T.Dense, "units", "activation", "use_bias"),
    L.BatchNormalization: _same(T.BatchNormalization, "axis", "momentum", "epsilon", "center",
                                "scale"),
    L.Activation: _same(T.Activation, "activation"),
    L.ReLU: _same(T.ReLU, "max_value", "negative_slope", "threshold"),
    L.Softmax: _same(T.Softmax, "axis"),
    L.Add: _same(T.Add),
    L.ZeroPadding2D: _same(T.ZeroPadding2D, "padding"),
    L.MaxPooling2D: _same(T.MaxPooling2D, "pool_size", "strides", "padding"),
    L.AveragePooling2D: _same(T.AveragePooling2D, "pool_size", "strides", "padding"),
    L.GlobalAveragePooling2D: _same(T.GlobalAveragePooling2D, "keepdims"),
    L.GlobalMaxPooling2D: _same(T.GlobalMaxPooling2D, "keepdims"),
    L.Flatten: _same(T.Flatten),
    L.Dropout: _same(T.Dropout, "rate"),
    L.Normalization: _standardize_normalization,
    keras_resnet.ImageNormalization: _standardize_image_normalization,
    keras_resnet.ZeroPadShortcut: _same(ZeroPadShortcut, "filters", "strides"),
}
TRANSLATIONS[keras_resnet.layers.FusedBatchNormalization] = TRANSLATIONS[L.BatchNormalization]
del L, T


def _translate_layer(layer):
    for k3_class, translate in TRANSLATIONS.items():
        if type(layer) is k3_class:
            return translate(layer)
    raise ValueError(
        f"Layer {layer.name!r} of class {type(layer).__name__} has no tf_keras twin. The bridge "
        f"translates {sorted(c.__name__ for c in TRANSLATIONS)} and nested functional models; "
        "add a translation to export.bridge.TRANSLATIONS for another layer."
    )


def _is_keras_tensor(x):
    return isinstance(x, keras.KerasTensor)


def _translate_graph(model, inputs, wrap, made):
    """Calls twins of `model`'s layers on tf_keras tensors `inputs`; returns the outputs.

    Walks the graph from the outputs (iteratively: deep nets exceed Python's recursion limit).
    `made` maps id(Keras 3 layer) -> (twin as called, twin's inner layer, carried weights).
    """
    values = {id(t): v for t, v in zip(model.inputs, inputs)}
    stack = list(model.outputs)
    while stack:
        tensor = stack[-1]
        if id(tensor) in values:
            stack.pop()
            continue
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        pending = [t for t in node.arguments.keras_tensors if id(t) not in values]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        args, kwargs = tf.nest.map_structure(
            lambda t: values[id(t)] if _is_keras_tensor(t) else t,
            (list(node.arguments.args), dict(node.arguments.kwargs)),
        )
        if isinstance(op, keras.Model):
            outs = _translate_graph(op, tf.nest.flatten(args), wrap, made)
        else:
            if id(op) not in made:
                twin, weights = _translate_layer(op)
                made[id(op)] = (wrap(twin, op) if wrap else twin, twin, weights, op)
            outs = made[id(op)][0](*args, **kwargs)
        for t, v in zip(node.outputs, tf.nest.flatten(outs)):
            values[id(t)] = v
    return [values[id(t)] for t in model.outputs]


def to_tf_keras(model, wrap=None):
    """The tf_keras twin of a Keras 3 functional `model`, with its weights.

    Each layer becomes its tf_keras twin under the same name and gets that layer's weights
    (shapes checked); nested models are flattened into one graph, so their layer names must be
    unique. `wrap(twin_layer, keras3_layer) -> layer` may wrap each twin before it is called
    (TFMOT's `quantize_annotate_layer`, `prune_low_magnitude`).
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_inbound_nodes") \
            or not model.outputs:
        raise ValueError(f"to_tf_keras needs a built Keras 3 functional model; received "
                         f"{type(model).__name__}.")
    inputs = [tf_keras.Input(shape=t.shape[1:], dtype=t.dtype, name=getattr(t, "name", None))
              for t in model.inputs]
    made = {}
    outputs = _translate_graph(model, inputs, wrap, made)
    twin = tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for _, inner, weights, source in made.values():
        weights = source.get_weights() if weights is None else weights
        expected = [tuple(w.shape) for w in inner.get_weights()]
        if expected != [tuple(w.shape) for w in weights]:
            raise ValueError(f"Layer {source.name!r}: weight shapes {expected} of the tf_keras "
                             f"twin differ from {[w.shape for w in weights]}.")
        inner.set_weights(weights)
    logging.info("Built the tf_keras twin of %s: %d layers.", model.name, len(made))
    return twin
