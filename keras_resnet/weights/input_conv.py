"""Pretrained first-conv kernels for images with another number of channels (timm's rule).

A kernel trained on I input channels (3 for RGB) serves a model that takes C channels:

- C = 1: the sum of the I kernels. A gray image g then gives exactly what the RGB net gave for
  the image (g, g, g).
- C > 1: the I kernels repeated to C channels (R, G, B, R, ... for RGB) and scaled by I / C,
  which keeps their total: an image whose C channels are equal gives the RGB net's response to
  (g, g, g) exactly when C is a multiple of I (6 channels), and on average otherwise (with 4,
  R's kernel counts twice).

This is `timm.models.adapt_input_conv(C, weight, base_chans=I)` (timm's default I = 3), on Keras
kernels (kh, kw, in, out) or torch weights (out, in, kh, kw) alike through `axis`.
"""

import math

import numpy as np

# The stem convolution of every keras_resnet model (ImageNet and CIFAR stems), and its torch key.
FIRST_CONV = "conv1_conv"
TORCH_FIRST_CONV = "conv1.weight"


def adapt_input_conv(kernel, in_channels: int, axis: int = 2, reverse: bool = False):
    """`kernel` with its input-channel axis fitted to `in_channels`, by timm's rule.

    Args:
        kernel: the first conv's kernel, (kh, kw, I, out) for Keras (axis=2) or (out, I, kh, kw)
            for torch (axis=1).
        in_channels: C, the channels of the model's input.
        axis: the input-channel axis of `kernel`.
        reverse: reverse the I input channels first (a kernel trained on BGR input, such as
            keras.applications' Caffe ResNets, into a model that takes RGB).
    Returns:
        The kernel with C input channels, in `kernel`'s dtype (computed in float32, as timm).
        The same array when C == I and not `reverse`.
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"`in_channels` must be a positive int; received {in_channels!r}.")
    kernel = np.asarray(kernel)
    base = kernel.shape[axis]
    if reverse:
        kernel = np.flip(kernel, axis)
    if in_channels == base:
        return np.ascontiguousarray(kernel)
    work = kernel.astype(np.float32)
    if in_channels == 1:
        out = work.sum(axis=axis, keepdims=True)
    else:
        repeat = int(math.ceil(in_channels / base))
        out = np.concatenate([work] * repeat, axis=axis)
        out = np.take(out, np.arange(in_channels), axis=axis)
        out = out * np.float32(base / float(in_channels))
    return out.astype(kernel.dtype)
