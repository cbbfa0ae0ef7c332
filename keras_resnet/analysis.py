"""Reading a built model: multiply-adds, stage outputs for backbones. Never re-derives the net."""

import math

import keras
from keras import layers


def count_multiply_adds(model):
    """Multiply-accumulates of one forward pass of one image (the paper's "FLOPs", Table 1).

    Counts convolutions and dense layers (the terms Table 1 counts); needs a static input size.
    Either data format: each conv's output size is read on its own spatial axes.
    """
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            h, w = out[2:4] if layer.data_format == "channels_first" else out[1:3]
            if h is None or w is None:
                raise ValueError(
                    f"count_multiply_adds needs a static input size; {model.name} has output "
                    f"{out} at {layer.name}. Build with input_shape=(H, W, C) (channels_first: "
                    "(C, H, W)).")
            kh, kw, cin, cout = layer.kernel.shape
            total += h * w * kh * kw * cin * cout // layer.groups
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def stage_names(model):
    """Names of the last layer of each stage: {"C2": "conv2_block3_out", ..., "C5": ...}.

    C_i has stride 2**i relative to the input (4 ... 32 for ImageNet nets). For V2 nets C5 is
    `post_relu`, the activated output, as keras-hub's backbones use.
    """
    names = [layer.name for layer in model.layers]
    out = {}
    for name in names:
        if name.startswith("conv") and name.endswith("_out"):
            out[f"C{int(name[4:name.index('_')])}"] = name
    if "post_relu" in names and out:
        out[max(out)] = "post_relu"
    if not out:
        raise ValueError(f"{model.name} has no ResNet stages (no layers named "
                         "conv<i>_block<j>_out).")
    return dict(sorted(out.items()))


def feature_extractor(model, levels=None):
    """A multi-output model: images -> {"C2": (B, H/4, W/4, C2), ..., "C5": (B, H/32, W/32, C5)}.

    For detection and segmentation heads (FPN, U-Net). Shares weights with `model`. `levels`
    picks a subset, e.g. ("C3", "C4", "C5"). A channels_first model gives (B, C_i, H/s, W/s).
    """
    names = stage_names(model)
    if levels is not None:
        unknown = sorted(set(levels) - set(names))
        if unknown:
            raise ValueError(f"Unknown levels {unknown}: {model.name} has {sorted(names)}.")
        names = {k: names[k] for k in levels}
    outputs = {k: model.get_layer(v).output for k, v in names.items()}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
