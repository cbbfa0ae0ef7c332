"""Residual blocks and stages of He et al., "Deep Residual Learning for Image Recognition" (2016).

Blocks take image tensors in the net's data format (`bn["data_format"]`: channels_last
(B, H, W, C) or channels_first (B, C, H, W)) and a `shortcut` rule (sec. 3.3): "A" identity with
zero-padded channels, "B" projection only where dimensions increase, "C" projection everywhere,
or None for the plain nets of sec. 4.1. Layer names follow keras.applications
(`conv2_block1_1_conv`, `conv2_block1_0_conv` for the projection, ...): weights load by name.
Keras' own layers (Conv2D, pooling, padding) read the data format from `keras.config`; the
builder checks it once.
"""

from keras import layers

from keras_resnet.layers import FusedBatchNormalization, ZeroPadShortcut, channel_axis

SHORTCUTS = ("A", "B", "C", None)


def conv(x, filters, kernel, stride, name, use_bias):
    """Conv2D with symmetric zero padding; strided convs pad explicitly as PyTorch does."""
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=use_bias,
        kernel_initializer="he_normal", name=name + "_conv",
    )(x)


def batch_norm(x, name, bn, zero_gamma=False):
    """BatchNormalization over the channel axis with the net's settings `bn` (epsilon, momentum,
    synchronized, data_format); `zero_gamma` starts its scale at 0. The layer is
    `FusedBatchNormalization`: keras.layers.BatchNormalization with a fused TensorFlow
    training kernel, same config and weights."""
    return FusedBatchNormalization(
        axis=channel_axis(bn["data_format"]), epsilon=bn["epsilon"], momentum=bn["momentum"],
        synchronized=bn["synchronized"], gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def conv_bn(x, filters, kernel, stride, name, bn, relu=True, zero_gamma=False):
    """conv -> BN (-> ReLU): the unit of the post-activation blocks. `bn` holds BN/conv settings."""
    x = conv(x, filters, kernel, stride, name, bn["use_bias"])
    x = batch_norm(x, name + "_bn", bn, zero_gamma)
    return layers.Activation("relu", name=name + "_relu")(x) if relu else x


def zero_last(bn, shortcut):
    """Whether a block's last BN (or V2's last conv) starts at 0, making the block an identity
    at initialization (`bn["zero_init_residual"]`; Goyal et al. 2017). Never in plain blocks,
    where it would cut the signal."""
    return bn["zero_init_residual"] and shortcut is not None


def shortcut_branch(x, filters, stride, shortcut, name, bn, source=None, project_bn=True):
    """The shortcut of a block with `filters` output channels, or None for a plain block.

    `source` is what a projection reads (the pre-activation in V2 blocks); identity and
    subsampling read `x`.
    """
    if shortcut is None:
        return None
    grows = x.shape[channel_axis(bn["data_format"])] != filters
    if shortcut == "C" or (shortcut == "B" and grows):
        s = layers.Conv2D(
            filters, 1, strides=stride, use_bias=bn["use_bias"] or not project_bn,
            kernel_initializer="he_normal", name=name + "_0_conv",
        )(x if source is None else source)
        return batch_norm(s, name + "_0_bn", bn) if project_bn else s
    if grows:
        return ZeroPadShortcut(filters, stride, bn["data_format"], name=name + "_0_pad")(x)
    if stride > 1:
        return layers.MaxPooling2D(1, strides=stride, name=name + "_0_pool")(x)
    return x


def merge(shortcut, x, name):
    """Adds the shortcut (sec. 3.2, eq. 1) and applies the block's final ReLU."""
    if shortcut is not None:
        x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.Activation("relu", name=name + "_out")(x)


def basic_block(x, filters, stride, shortcut, name, bn, stride_in=None):
    """Two 3x3 convs (Fig. 5 left; ResNet-18/34 and the CIFAR nets). Out: `filters` channels."""
    s = shortcut_branch(x, filters, stride, shortcut, name, bn)
    x = conv_bn(x, filters, 3, stride, name + "_1", bn)
    x = conv_bn(x, filters, 3, 1, name + "_2", bn, relu=False, zero_gamma=zero_last(bn, shortcut))
    return merge(s, x, name)


def bottleneck_block(x, filters, stride, shortcut, name, bn, stride_in="1x1"):
    """1x1 reduce, 3x3, 1x1 expand (Fig. 5 right; ResNet-50/101/152). Out: 4 * `filters`.

    `stride_in` "1x1" strides the first 1x1 (the paper, keras.applications, "v1");
    "3x3" strides the 3x3 (torchvision, "v1.5").
    """
    s = shortcut_branch(x, 4 * filters, stride, shortcut, name, bn)
    x = conv_bn(x, filters, 1, stride if stride_in == "1x1" else 1, name + "_1", bn)
    x = conv_bn(x, filters, 3, stride if stride_in == "3x3" else 1, name + "_2", bn)
    x = conv_bn(x, 4 * filters, 1, 1, name + "_3", bn, relu=False,
                zero_gamma=zero_last(bn, shortcut))
    return merge(s, x, name)


def preact_bottleneck_block(x, filters, stride, shortcut, name, bn, stride_in=None):
    """Pre-activation bottleneck (He et al., "Identity Mappings", 2016; keras.applications V2).

    BN-ReLU come before each conv; the sum is not activated. Convs followed by BN have no bias.
    """
    preact = batch_norm(x, name + "_preact_bn", bn)
    preact = layers.Activation("relu", name=name + "_preact_relu")(preact)
    s = shortcut_branch(x, 4 * filters, stride, shortcut, name, bn, source=preact, project_bn=False)
    nobias = {**bn, "use_bias": False}
    y = conv_bn(preact, filters, 1, 1, name + "_1", nobias)
    y = layers.ZeroPadding2D(1, name=name + "_2_pad")(y)
    y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, kernel_initializer="he_normal",
                      name=name + "_2_conv")(y)
    y = batch_norm(y, name + "_2_bn", bn)
    y = layers.Activation("relu", name=name + "_2_relu")(y)
    y = layers.Conv2D(4 * filters, 1, name=name + "_3_conv",
                      kernel_initializer="zeros" if zero_last(bn, shortcut) else "he_normal")(y)
    return layers.Add(name=name + "_out")([s, y])


BLOCKS = {
    "basic": basic_block,
    "bottleneck": bottleneck_block,
    "preact_bottleneck": preact_bottleneck_block,
}


def stack(x, block, filters, blocks, stride, name, shortcut, bn, stride_in="1x1",
          stride_at="first"):
    """One stage `name` (conv2..conv5): `blocks` blocks, the stage's stride on its first block
    (the paper) or its last (keras.applications V2)."""
    for i in range(1, blocks + 1):
        strided = i == (1 if stride_at == "first" else blocks)
        x = BLOCKS[block](
            x, filters, stride if strided else 1, shortcut, f"{name}_block{i}", bn,
            stride_in=stride_in
        )
    return x
