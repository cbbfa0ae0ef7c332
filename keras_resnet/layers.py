"""Custom layers of the ResNet family, registered for safe `.keras` loading.

Both use `keras.ops` only, so they run under the TensorFlow, JAX and PyTorch backends.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(keras.layers.Layer):
    """Shortcut option A (He et al. 2016, sec. 3.3): identity, strided subsampling, zero channels.

    (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters); the extra `filters - C` channels are
    zeros, so the shortcut adds no parameters.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="keras_resnet")
class ImageNormalization(keras.layers.Layer):
    """`(x[..., ::-1] if reverse_channels else x) - mean) / std`, with mean and std in pixel units.

    Puts a weight set's preprocessing inside the model (`include_preprocessing=True`), so raw
    RGB images in [0, 255] go in. (B, H, W, C) -> (B, H, W, C), float.
    """

    def __init__(self, mean, std, reverse_channels=False, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.reverse_channels = bool(reverse_channels)

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.reverse_channels:
            x = ops.flip(x, axis=-1)
        mean = ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
        std = ops.cast(ops.convert_to_tensor(self.std), self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean,
            "std": self.std,
            "reverse_channels": self.reverse_channels,
        }
