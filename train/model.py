"""The network a recipe trains: raw pixels in, normalized inside, from scratch or pretrained.

    built = train.model.build_model(recipe, view, mean, num_classes)
    built.model, built.weights   # the keras.Model; summary.json's "weights" record ({}: none)
"""

import os
import typing

import keras
import numpy as np

import keras_resnet
from keras_resnet.weights import transfer
from train import rundir


class Built(typing.NamedTuple):
    """`build_model`'s result: the model, and what was loaded into it (summary.json's
    "weights": the weight set's tag or path, source, license, sha256, normalization, and the
    layers loaded, left at initialization and adapted; {} for weights='none')."""

    model: keras.Model
    weights: dict


def check_model_name(name: str) -> str:
    """The canonical model name (a `keras_resnet.ARCHS` key or 'resnetN'/'plainN', N = 6n+2);
    ValueError naming the choices otherwise."""
    return keras_resnet.resolve(name).name


def pretrained_weights(recipe) -> transfer.PretrainedWeights | None:
    """The recipe's weight set (`keras_resnet.weights.transfer.resolve_pretrained` of
    `recipe.weights` with `recipe.weights_normalization`), or None for weights='none'. A named
    set not in the Keras cache fails at once (OSError naming the URL and where to put it)."""
    if recipe.weights == "none":
        return None
    option = None if recipe.weights_normalization == "auto" else recipe.weights_normalization
    return transfer.resolve_pretrained(check_model_name(recipe.model), recipe.weights,
                                       normalization=option)


def _normalization(pretrained, channels: int):
    try:
        return pretrained.normalization_for(channels)
    except ValueError:
        raise ValueError(
            f"The weights {pretrained.tag_or_path!r} do not say how their input images were "
            "normalized (no registry row, no normalization layer in a .keras model, no sidecar "
            "JSON from keras_resnet.convert), and features fed another normalization are "
            "silently worse. Set the recipe field weights_normalization (--set="
            f"weights_normalization=MODE, MODE one of {list(transfer.NORMALIZATION_MODES)}) to "
            "the one they were trained with.") from None


def build_model(recipe, view, mean, num_classes: int, synchronized_bn: bool = False,
                class_names=None) -> Built:
    """The recipe's network for images of `view.shape`: raw pixels (B, H, W, C) in [0, 255] ->
    class probabilities (B, classes), and the record of its weights.

    weights='none': an `ImageNormalization` layer subtracts `mean` first (the per-pixel mean
    image of the training split, sec. 4.2, or a per-channel mean; `train.data.normalization`),
    then `keras_resnet.create(recipe.model, weights=None)` (He init). Pretrained weights: the
    layer normalizes with the weight set's (mean, std) instead (`mean` is not used), the graph
    takes the file's variant, and `transfer.load_pretrained` loads it by layer name: a
    classifier of another class count, or of other `class_names` than the labels.txt beside a
    run's model.keras names, stays at initialization, the first conv is adapted to
    the view's channels. `recipe.shortcut` other than 'default' replaces the variant's option
    (sec. 3.3). Saved and exported models take raw pixels either way.
    """
    name = check_model_name(recipe.model)
    arch = keras_resnet.resolve(name)
    if recipe.shortcut != "default" and arch.shortcut is None:
        raise ValueError(f"model {recipe.model!r} is a plain net (no shortcuts); got "
                         f"shortcut={recipe.shortcut!r}. Use shortcut='default'.")
    pretrained = pretrained_weights(recipe)
    inputs = keras.Input(shape=view.shape, name="image")
    if pretrained is None:
        norm = (np.asarray(mean, np.float32), 1.0)
    else:
        norm = _normalization(pretrained, view.channels)
    x = keras_resnet.ImageNormalization(*norm, name="mean_subtraction", dtype="float32")(inputs)
    kwargs = dict(weights=None, input_tensor=x, classes=num_classes,
                  synchronized_bn=synchronized_bn, bn_momentum=recipe.bn_momentum,
                  zero_init_residual=recipe.zero_init_residual)
    if recipe.shortcut != "default":
        kwargs["shortcut"] = recipe.shortcut
    if pretrained is not None:
        kwargs["variant"] = pretrained.variant
    model = keras_resnet.create(name, **kwargs)
    if pretrained is None:
        return Built(model, {})
    source_names = _source_labels(pretrained.path) if class_names is not None else None
    new_head = source_names is not None and source_names != tuple(str(c) for c in class_names)
    report = transfer.load_pretrained(model, pretrained, new_head=new_head)
    record = {**pretrained.record(), "layers_loaded": len(report.layers_loaded),
              "layers_left_at_init": list(report.layers_left_at_init),
              "adapted": list(report.adapted)}
    if new_head:
        record["new_head"] = ("the file's labels.txt names other classes: "
                              f"{list(source_names[:10])}")
    return Built(model, record)


def _source_labels(path) -> tuple | None:
    """The class names in the labels.txt beside a weights file (a run's model.keras), or None."""
    labels = os.path.join(os.path.dirname(os.path.abspath(str(path))), "labels.txt")
    if not path or not os.path.isfile(str(path)) or not os.path.isfile(labels):
        return None
    return rundir.read_labels(labels)
