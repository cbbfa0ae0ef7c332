"""The network a recipe trains: raw pixels in, the dataset's mean subtracted inside.

    model = train.model.build_model(recipe, view, mean, num_classes)
"""

import keras
import numpy as np

import keras_resnet


def check_model_name(name: str) -> str:
    """The canonical model name (a `keras_resnet.ARCHS` key or 'resnetN'/'plainN', N = 6n+2);
    ValueError naming the choices otherwise."""
    return keras_resnet.resolve(name).name


def build_model(recipe, view, mean, num_classes: int, synchronized_bn: bool = False):
    """The recipe's network for images of `view.shape`: raw pixels (B, H, W, C) in [0, 255] ->
    class probabilities (B, classes).

    An `ImageNormalization` layer subtracts `mean` first (the per-pixel mean image of the
    training split, sec. 4.2, or a per-channel mean; `train.data.normalization`), so saved and
    exported models take raw pixels. Then `keras_resnet.create(recipe.model, weights=None)`
    (He init); `recipe.shortcut` other than 'default' replaces the variant's option (sec. 3.3).
    """
    name = check_model_name(recipe.model)
    arch = keras_resnet.resolve(name)
    if recipe.shortcut != "default" and arch.shortcut is None:
        raise ValueError(f"model {recipe.model!r} is a plain net (no shortcuts); got "
                         f"shortcut={recipe.shortcut!r}. Use shortcut='default'.")
    inputs = keras.Input(shape=view.shape, name="image")
    mean = np.asarray(mean, np.float32)
    x = keras_resnet.ImageNormalization(mean, 1.0, name="mean_subtraction",
                                        dtype="float32")(inputs)
    kwargs = dict(weights=None, input_tensor=x, classes=num_classes,
                  synchronized_bn=synchronized_bn, bn_momentum=recipe.bn_momentum,
                  zero_init_residual=recipe.zero_init_residual)
    if recipe.shortcut != "default":
        kwargs["shortcut"] = recipe.shortcut
    return keras_resnet.create(name, **kwargs)
