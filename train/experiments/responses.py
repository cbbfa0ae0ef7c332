"""Layer responses of trained nets (the paper's Fig. 7): the standard deviation of each 3x3
layer's output after BN and before the addition and ReLU, on test images."""

import os

import numpy as np
from absl import logging


def response_layers(model) -> list:
    """Names of the BatchNormalization layers that follow a 3x3 convolution, in model order
    (the stem's conv1_bn, then convS_blockB_1_bn and _2_bn of each basic block)."""
    import keras

    names = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or not layer.name.endswith("_bn"):
            continue
        try:
            conv = model.get_layer(layer.name[: -len("_bn")] + "_conv")
        except ValueError:
            continue
        if tuple(conv.kernel_size) == (3, 3):
            names.append(layer.name)
    return names


def layer_response_std(model, images, batch_size: int = 250) -> dict:
    """{layer name: std} over all elements (images, positions, channels) of each response
    layer's output in inference mode, for `images` (a numpy array or a batched tf.data of
    (images, labels) in the model's input format)."""
    import keras

    names = response_layers(model)
    if not names:
        raise ValueError(f"model {model.name!r} has no BatchNormalization after a 3x3 conv.")
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size)) \
        if isinstance(images, np.ndarray) else (x for x, _ in images)
    count = np.zeros(len(names))
    total = np.zeros(len(names))
    squares = np.zeros(len(names))
    for x in batches:
        outputs = probe(x, training=False)
        for i, y in enumerate(outputs):
            y = np.asarray(y, np.float64)
            count[i] += y.size
            total[i] += y.sum()
            squares[i] += np.square(y).sum()
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return dict(zip(names, std.tolist()))


def test_images(recipe, num_images: int, data_dir=None):
    """The first `num_images` test images of the recipe's dataset, in the evaluation view."""
    from train import data as data_lib
    from train import pipeline

    examples, info = data_lib.load(recipe.dataset, f"test[:{num_images}]", data_dir=data_dir)
    return pipeline.batches(examples, info, training=False, batch_size=250,
                            augment=recipe.augment, image_size=recipe.image_size)


def run_responses(record, num_images: int, data_dir=None) -> list:
    """Stds of `record`'s model.keras responses, in layer order."""
    import keras

    import keras_resnet  # noqa: F401  (registers its layers for loading)
    from train import schedules  # noqa: F401  (registers the lr schedules)

    path = os.path.join(record.spec.run_dir, "model.keras")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist: the run has not finished.")
    model = keras.saving.load_model(path, compile=False)
    logging.info("Layer responses of %s on %d test images.", path, num_images)
    stds = layer_response_std(model, test_images(record.spec.recipe, num_images, data_dir))
    keras.backend.clear_session()
    return list(stds.values())


def plot_responses(responses: dict, path: str) -> str:
    """Fig. 7: std per 3x3 layer, in layer order (top) and sorted descending (bottom);
    plain nets dashed, ResNets solid. `responses`: {net label: [std, ...]}."""
    from train.experiments import report

    fig = report.figure(figsize=(8, 7))
    top, bottom = fig.subplots(2, 1)
    for i, (label, stds) in enumerate(responses.items()):
        style = dict(color=f"C{i}", ls="--" if label.startswith("plain") else "-",
                     label=report.pretty_net(label), lw=1.5)
        top.plot(range(1, len(stds) + 1), stds, **style)
        bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    values = [v for stds in responses.values() for v in stds if v > 0]
    wide = bool(values) and max(values) > 100 * min(values)
    for ax in (top, bottom):
        ax.set_ylabel("std (log scale)" if wide else "std")
        if wide:  # e.g. BN moving statistics not yet converged in a short run
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return report.save_figure(fig, path)
