"""The one builder: a stage spec `[(filters, blocks, stride), ...]` becomes a Keras model.

Input validation, the `include_top`/`pooling`/`classes` rules of keras.applications and weight
loading live here, once, for every named variant.
"""

import os
import sys

import keras
import numpy as np
from keras import layers

from keras_resnet import blocks as B
from keras_resnet.layers import ImageNormalization, standardize_data_format
from keras_resnet.preprocessing import Normalization

# Graph layouts: "v1" is keras.applications' (and the paper's stride placement), "v1.5" is
# torchvision's. Basic-block nets differ between the two only in conv bias and BN epsilon.
LAYOUTS = {
    "v1": {"stride_in": "1x1", "use_bias": True, "epsilon": 1.001e-5},
    "v1.5": {"stride_in": "3x3", "use_bias": False, "epsilon": 1e-5},
    "v2": {"stride_in": "3x3", "use_bias": True, "epsilon": 1.001e-5},
}
STEMS = ("imagenet", "cifar")
MIN_SIZE = {"imagenet": 32, "cifar": 8}


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}: expected one of {list(choices)}.")


def _image_dims(shape, data_format):
    """(height, width, channels) of an image shape in `data_format` order."""
    return (shape[1], shape[2], shape[0]) if data_format == "channels_first" else tuple(shape)


def _input_layer(input_tensor, input_shape, default_size, min_size, include_top, pretrained,
                 data_format):
    """Validates the input as keras.applications does; returns the Keras input tensor.

    `input_shape` is (height, width, channels) under channels_last and (channels, height,
    width) under channels_first, as in keras.applications.
    """
    first = data_format == "channels_first"
    dims = "(channels, height, width)" if first else "(height, width, channels)"
    order = f"{data_format}: {dims}"
    default_shape = (3, default_size, default_size) if first else (default_size, default_size, 3)
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        any_size = (3, None, None) if first else (None, None, 3)
        input_shape = default_shape if (include_top or pretrained) else any_size
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must have 3 entries ({order}); received "
                         f"input_shape={input_shape}.")
    h, w, c = _image_dims(input_shape, data_format)
    if c is None:
        raise ValueError(f"The channel dimension must be known; received input_shape={input_shape} "
                         f"({order}).")
    for side in (h, w):
        if side is not None and side < min_size:
            raise ValueError(
                f"Input size must be at least {min_size}x{min_size}; received "
                f"input_shape={input_shape} ({order}). Resize or pad the images first."
            )
    if include_top and (h is None or w is None):
        raise ValueError(
            "With `include_top=True` the input needs a static shape; received "
            f"input_shape={input_shape} ({order}). Pass e.g. input_shape={default_shape}, or "
            "include_top=False with pooling='avg' for any size."
        )
    if input_tensor is None:
        return layers.Input(shape=input_shape, name="input_layer")
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` must be a Keras tensor (from keras.Input); received "
            f"{type(input_tensor)}."
        )
    return input_tensor


def _check_arguments(stages, block, stem, shortcut, layout, pooling, weights, weight_set,
                     include_top, classes, classifier_activation):
    """The public boundary: every argument checked before anything is built."""
    _check_choice("block", block, B.BLOCKS)
    _check_choice("stem", stem, STEMS)
    _check_choice("shortcut option", shortcut, B.SHORTCUTS)
    _check_choice("layout", layout, LAYOUTS)
    _check_choice("pooling", pooling, (None, "avg", "max"))
    if not stages or any(len(s) != 3 or min(s) < 1 for s in stages):
        raise ValueError(f"`stages` must be a non-empty list of (filters, blocks, stride) with "
                         f"positive entries; received {stages!r}.")
    if weights is not None and weight_set is None and not os.path.exists(weights):
        raise ValueError(
            "The `weights` argument should be None (random initialization), a named weight set, "
            f"or the path to a weights file; received weights={weights!r} (no such file)."
        )
    if weight_set is not None and include_top and classes != weight_set.classes:
        raise ValueError(
            f"Weights {weight_set.tag!r} have {weight_set.classes} classes; with include_top=True, "
            f"`classes` must be {weight_set.classes}, received classes={classes}. Use "
            "include_top=False and add your own head to fine-tune on other classes."
        )
    pretrained = weights is not None or weight_set is not None
    if pretrained and include_top and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "With pretrained weights, `classifier_activation` must be None or 'softmax'; "
            f"received {classifier_activation!r}."
        )


def _fit_preprocessing(preprocessing, img_input, data_format):
    """(mean, std, reverse) of `preprocessing` for the input's channels: an RGB set's
    per-channel constants averaged (1 channel) or repeated (more), as the first conv's kernels
    are (`keras_resnet.weights.input_conv`)."""
    mean, std, rev = preprocessing
    channels = img_input.shape[1 if data_format == "channels_first" else -1]
    if channels == 3 or np.ndim(mean) != 1 or len(mean) != 3:
        return preprocessing
    if rev and channels != 1:
        raise ValueError(
            f"These weights take BGR input (their preprocessing reverses RGB), which has no "
            f"meaning for {channels} input channels. Build the model with weights=None and load "
            "them with keras_resnet.weights.load_pretrained, which turns their first conv to RGB."
        )
    fitted = Normalization(tuple(mean), tuple(std)).for_channels(channels)
    return fitted.mean, fitted.std, False


def _stem(x, stem, filters, bn, preact):
    """ImageNet: 7x7/2 conv (BN, ReLU unless pre-activation) + 3x3/2 max-pool (Table 1).
    CIFAR: one 3x3 conv-BN-ReLU with the first stage's filters (sec. 4.2)."""
    if stem == "cifar":
        return B.conv_bn(x, filters, 3, 1, "conv1", bn)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=bn["use_bias"], kernel_initializer="he_normal",
                      name="conv1_conv")(x)
    if not preact:
        x = B.batch_norm(x, "conv1_bn", bn)
        x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _head(x, include_top, pooling, classes, classifier_activation):
    """Global average pooling + classifier (kept float32 under mixed precision), or the
    backbone's output: pooled ("avg"/"max") or the last stage's feature map (None)."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        policy = keras.config.dtype_policy()
        mixed = policy.compute_dtype != policy.variable_dtype
        return layers.Dense(classes, activation=classifier_activation, name="predictions",
                            dtype="float32" if mixed else None)(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def _model_inputs(img_input, input_tensor):
    """The model's inputs: the `input_tensor`'s source inputs, else `img_input`; a single input
    unwrapped (a model of one input is called with the tensor itself)."""
    inputs = ([img_input] if input_tensor is None
              else keras.utils.get_source_inputs(input_tensor))
    return inputs[0] if len(inputs) == 1 else inputs


def build_resnet(stages, block="bottleneck", *, stem="imagenet", shortcut="B", layout="v1",
                 stride_at="first", include_top=True, weights=None, input_tensor=None,
                 input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                 include_preprocessing=False, preprocessing=None, synchronized_bn=False,
                 bn_momentum=0.99, zero_init_residual=False, default_size=224, name="resnet",
                 weight_set=None):
    """Builds a ResNet from a stage spec, in Keras' `image_data_format()` (either format).

    Args:
        stages: `[(filters, blocks, stride), ...]`, e.g. ResNet-50's
            `[(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]` (Table 1). Stage i is named
            `conv{i+2}`. Bottleneck stages output 4 * filters channels.
        block: "basic", "bottleneck" or "preact_bottleneck" (V2).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3 conv, sec. 4.2).
        shortcut: "A", "B", "C" (sec. 3.3) or None for a plain net.
        layout: "v1" (keras.applications), "v1.5" (torchvision) or "v2" (pre-activation).
        stride_at: put each stage's stride on its "first" block or its "last" (keras V2).
        include_top, input_tensor, input_shape, pooling, classes, classifier_activation, name:
            as in keras.applications; `input_shape` is (H, W, C) under channels_last and
            (C, H, W) under channels_first.
        weights: None, or a path to a weights file (`.weights.h5`, legacy `.h5`, a `.keras`
            model, `.safetensors`, `.pth`). Named weight sets are resolved by the variants.
            Kernels are (kh, kw, in, out) in both data formats, so the same files load into
            either; RGB weights load into a model of other input channels, the first conv
            adapted by timm's rule (`keras_resnet.weights.adapt_input_conv`).
        include_preprocessing: put the normalization `preprocessing` inside the model, so that
            it takes RGB images in [0, 255] (1-channel images: the RGB constants averaged).
        preprocessing: (mean, std, reverse_channels) in pixel units, for include_preprocessing
            (see `ImageNormalization`: scalars, per-channel or per-pixel, channels_last order).
        synchronized_bn: synchronize BatchNorm statistics across replicas under tf.distribute.
        bn_momentum: momentum of BatchNorm's moving statistics (Keras' 0.99; PyTorch's
            default is 0.9 in these terms, which short runs need to evaluate well).
        zero_init_residual: start the last BN scale of each residual branch at 0 (the last
            conv in V2), so that every block is an identity at initialization (Goyal et al.
            2017, timm's `zero_init_last`, torchvision's `zero_init_residual`). Plain nets
            ignore it. Off by default, as in the paper and keras.applications.
        weight_set: the registry row behind `weights`, when the caller resolved a tag.

    Returns:
        A functional `keras.Model`: images (B, H, W, C) or (B, C, H, W) -> (B, classes) with
        `include_top`, else the last stage's features (B, H/32, W/32, C5) (channels_first:
        (B, C5, H/32, W/32)) or pooled (B, C5).
    """
    _check_arguments(stages, block, stem, shortcut, layout, pooling, weights, weight_set,
                     include_top, classes, classifier_activation)
    if include_preprocessing and preprocessing is None:
        raise ValueError("include_preprocessing=True needs the weights' preprocessing; "
                         "pass a named weight set or `preprocessing=(mean, std, reverse)`.")
    data_format = standardize_data_format()
    cfg = LAYOUTS[layout]
    bn = {"use_bias": cfg["use_bias"], "epsilon": cfg["epsilon"], "momentum": bn_momentum,
          "synchronized": synchronized_bn, "zero_init_residual": zero_init_residual,
          "data_format": data_format}
    preact = block == "preact_bottleneck"
    img_input = _input_layer(input_tensor, input_shape, default_size, MIN_SIZE[stem], include_top,
                             weight_set is not None, data_format)

    x = img_input
    if include_preprocessing:
        mean, std, rev = _fit_preprocessing(preprocessing, img_input, data_format)
        x = ImageNormalization(mean, std, rev, data_format, name="preprocessing")(x)
    x = _stem(x, stem, stages[0][0], bn, preact)
    for i, (filters, blocks, stride) in enumerate(stages):
        x = B.stack(x, block, filters, blocks, stride, f"conv{i + 2}", shortcut, bn,
                    stride_in=cfg["stride_in"], stride_at=stride_at)
    if preact:
        x = B.batch_norm(x, "post_bn", bn)
        x = layers.Activation("relu", name="post_relu")(x)
    x = _head(x, include_top, pooling, classes, classifier_activation)

    # Keras walks the graph recursively (ResNet-1202: ~4,000 layers), also when loading it.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 200 * sum(s[1] for s in stages) + 2000))
    model = keras.Model(_model_inputs(img_input, input_tensor), x, name=name)

    if weights is not None or weight_set is not None:
        from keras_resnet.weights import load_weights
        load_weights(model, weights, weight_set=weight_set)
    return model
