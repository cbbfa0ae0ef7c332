"""Custom layers of the ResNet family, registered for safe `.keras` loading.

They use `keras.ops` only, so they run under the TensorFlow, JAX and PyTorch backends, in
either image data format. `FusedBatchNormalization` takes a backend's fused training kernel
where a training stack has registered one (`train/` registers TensorFlow's); this package
never imports TensorFlow.
"""

import keras
import numpy as np
from keras import ops

DATA_FORMATS = ("channels_last", "channels_first")


def standardize_data_format(data_format=None):
    """`data_format`, or Keras' global `image_data_format()` when None; checks the value."""
    value = keras.config.image_data_format() if data_format is None else str(data_format).lower()
    if value not in DATA_FORMATS:
        raise ValueError(f"Unknown data_format {data_format!r}: expected one of "
                         f"{list(DATA_FORMATS)}.")
    return value


def channel_axis(data_format):
    """Channel axis of an image batch: -1 for (B, H, W, C), 1 for (B, C, H, W)."""
    return 1 if data_format == "channels_first" else -1


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(keras.layers.Layer):
    """Shortcut option A (He et al. 2016, sec. 3.3): identity, strided subsampling, zero channels.

    channels_last (B, H, W, C) -> (B, ceil(H/s), ceil(W/s), filters); channels_first
    (B, C, H, W) -> (B, filters, ceil(H/s), ceil(W/s)). The extra `filters - C` channels are
    zeros, so the shortcut adds no parameters.
    """

    def __init__(self, filters, strides=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        channels = input_shape[channel_axis(self.data_format)] if len(input_shape) == 4 else None
        if channels is None or channels > self.filters:
            raise ValueError(
                f"ZeroPadShortcut {self.name!r} pads a 4D {self.data_format} image batch with "
                f"known channels up to filters={self.filters}; received input shape {input_shape}."
            )

    def call(self, x):
        first = self.data_format == "channels_first"
        s = self.strides
        if s > 1:
            x = x[:, :, ::s, ::s] if first else x[:, ::s, ::s, :]
        extra = self.filters - x.shape[channel_axis(self.data_format)]
        if not extra:
            return x
        return ops.pad(x, [[0, 0], [0, extra], [0, 0], [0, 0]] if first
                       else [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        s = self.strides
        if self.data_format == "channels_first":
            b, _, h, w = input_shape
        else:
            b, h, w, _ = input_shape
        h, w = (None if d is None else -(-d // s) for d in (h, w))
        if self.data_format == "channels_first":
            return (b, self.filters, h, w)
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "data_format": self.data_format}

    @classmethod
    def from_config(cls, config):
        # Configs written before channels_first support have no data_format: they were NHWC.
        return cls(**{"data_format": "channels_last", **config})


def _normalization_array(what, value):
    """`value` (scalar, (C,) or (H, W, C)) as a float64 array; a clear ValueError otherwise."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"ImageNormalization `{what}` must be numbers; received "
                         f"{what}={value!r}.") from e
    if array.ndim not in (0, 1, 3):
        raise ValueError(
            f"ImageNormalization `{what}` must be a scalar, a per-channel sequence (C,) or a "
            f"per-pixel array (H, W, C) in channels_last order; received shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"ImageNormalization `{what}` must be finite; received {what}={value!r}.")
    return array


@keras.saving.register_keras_serializable(package="keras_resnet")
class ImageNormalization(keras.layers.Layer):
    """`(x - mean) / std` in pixel units, the channels reversed first if `reverse_channels`.

    `mean` and `std` may each be a scalar, a per-channel sequence (C,) or a per-pixel array
    (H, W, C) such as the paper's per-pixel mean image (sec. 4.2), always given in
    channels_last order and broadcast against one image; under channels_first the layer
    transposes them itself. With `reverse_channels` they are in the reversed (e.g. BGR) order.
    The values live in the config (JSON lists), so `.keras` files load with safe_mode=True and
    weight files, which hold nothing for this layer, load by name.

    (B, H, W, C) or (B, C, H, W) -> the same shape, in the layer's compute dtype.
    """

    def __init__(self, mean, std, reverse_channels=False, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self._mean = _normalization_array("mean", mean)
        self._std = _normalization_array("std", std)
        if not (self._std > 0).all():
            raise ValueError("ImageNormalization `std` must be > 0 everywhere; received "
                             f"std={std!r}.")
        try:
            np.broadcast_shapes(self._mean.shape, self._std.shape)
        except ValueError:
            raise ValueError(f"ImageNormalization `mean` of shape {self._mean.shape} and `std` of "
                             f"shape {self._std.shape} do not broadcast together.") from None
        self.reverse_channels = bool(reverse_channels)
        self.data_format = standardize_data_format(data_format)

    @property
    def mean(self):
        """The mean as given: a float32 array of shape (), (C,) or (H, W, C), channels_last."""
        return self._mean.astype(np.float32)

    @property
    def std(self):
        """The std as given: a float32 array of shape (), (C,) or (H, W, C), channels_last."""
        return self._std.astype(np.float32)

    def _in_layout(self, array):
        """A channels_last constant laid out to broadcast against this layer's input batch."""
        if self.data_format == "channels_first" and array.ndim == 1:
            array = array.reshape(-1, 1, 1)
        elif self.data_format == "channels_first" and array.ndim == 3:
            array = array.transpose(2, 0, 1)
        return array.astype(np.float32)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"ImageNormalization {self.name!r} takes a batch of images "
                             "(B, H, W, C) or (B, C, H, W); received input shape "
                             f"{input_shape}.")
        first = self.data_format == "channels_first"
        image = tuple(input_shape[2:]) + (input_shape[1],) if first else tuple(input_shape[1:])
        for what, array in (("mean", self._mean), ("std", self._std)):
            for size, dim in zip(array.shape[::-1], image[::-1]):
                if size != 1 and size != dim:
                    raise ValueError(
                        f"ImageNormalization {self.name!r}: `{what}` of shape {array.shape} does "
                        f"not broadcast against the input's image (height, width, channels) = "
                        f"{image} ({self.data_format} input shape {input_shape}). Give a scalar, "
                        "one value per channel, or a per-pixel array of the input's static size."
                    )

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.reverse_channels:
            x = ops.flip(x, axis=channel_axis(self.data_format))
        mean = ops.cast(ops.convert_to_tensor(self._in_layout(self._mean)), self.compute_dtype)
        std = ops.cast(ops.convert_to_tensor(self._in_layout(self._std)), self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self._mean.tolist(),
            "std": self._std.tolist(),
            "reverse_channels": self.reverse_channels,
            "data_format": self.data_format,
        }

    @classmethod
    def from_config(cls, config):
        # Configs written before channels_first support have no data_format: they were NHWC.
        return cls(**{"data_format": "channels_last", **config})


# backend name -> kernel(x, gamma, beta, moving_mean, moving_variance, epsilon, momentum)
#   -> (y, new_moving_mean, new_moving_variance); all float32, x rank-4 NHWC.
FUSED_TRAINING_KERNELS = {}


def register_fused_training_kernel(backend, kernel):
    """Gives `FusedBatchNormalization` a fused training kernel for one Keras backend.

    The kernel normalizes a training batch by its own statistics and returns the updated
    moving statistics. `train.fused_batch_norm` registers TensorFlow's `FusedBatchNormV3`; the
    model library itself holds no backend code, so it builds without TensorFlow."""
    if not callable(kernel):
        raise TypeError(f"kernel must be callable, got {kernel!r}")
    FUSED_TRAINING_KERNELS[str(backend)] = kernel


@keras.saving.register_keras_serializable(package="keras_resnet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step can be one fused kernel.

    Keras 3 normalizes a training batch with separate moments and normalization ops and
    differentiates through them; where a kernel is registered for the backend
    (`register_fused_training_kernel`; `train/` registers TensorFlow's `FusedBatchNormV3`
    with its fused gradient) this layer calls it instead, about 1.3x faster for a whole
    ResNet-20 training step on CPU. Config, weights and layer names are the parent's, so
    keras.applications files load unchanged.

    The fused path is taken only when a kernel is registered for the backend, `training` is
    true and the layer trainable, and the parent would do plain batch statistics: not
    synchronized, no renorm, no mask, a rank-4 NHWC input (axis -1 or 3) in float32.
    Everything else (no kernel, channels_first, mixed precision, inference) is the parent's
    `call`, unchanged.

    One difference in the moving statistics: TensorFlow's fused kernel updates the moving
    variance with the unbiased batch variance, i.e. Bessel's correction n / (n - 1) with
    n = B * H * W (as PyTorch does); the parent uses the biased one. Both normalize the batch
    itself with the biased variance. For a CIFAR batch of 128 at 8x8 the factor is 1 + 1.2e-4.
    """

    def call(self, inputs, training=None, mask=None):
        kernel = self._fused_kernel(inputs, training, mask)
        if kernel is not None:
            return self._fused_training_call(kernel, inputs)
        return super().call(inputs, training=training, mask=mask)

    def _fused_kernel(self, inputs, training, mask):
        kernel = FUSED_TRAINING_KERNELS.get(keras.backend.backend())
        fusable = (kernel is not None and bool(training) and self.trainable
                   and not self.synchronized and not self.renorm and mask is None
                   and len(inputs.shape) == 4 and self.axis in (-1, 3)
                   and keras.backend.standardize_dtype(inputs.dtype) == "float32")
        return kernel if fusable else None

    def _fused_training_call(self, kernel, inputs):
        channels = inputs.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,), "float32")
        outputs, moving_mean, moving_variance = kernel(
            inputs, gamma, beta, ops.cast(self.moving_mean, "float32"),
            ops.cast(self.moving_variance, "float32"), self.epsilon, self.momentum)
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return ops.cast(outputs, self.compute_dtype)
