"""Magnitude pruning with TFMOT (on the tf_keras twin) and the compressed size it buys.

Pruned weights are zeros: the file keeps its size, but it compresses. `zipped_size` is what a
download or an app bundle weighs. `fine_tune` and `size_report` are the `pruned` format row's
steps (`export.spec`).
"""

import gzip
import os

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras
from absl import logging

from export import bridge
from export.spec import FineTuned

PRUNABLE = (tf_keras.layers.Conv2D, tf_keras.layers.Dense, tf_keras.layers.DepthwiseConv2D)


def prunable_twin(model, schedule):
    """The tf_keras twin of Keras 3 `model` with every conv and dense layer wrapped by
    `prune_low_magnitude(schedule)`."""

    def wrap(twin, _):
        if isinstance(twin, PRUNABLE):
            return tfmot.sparsity.keras.prune_low_magnitude(twin, pruning_schedule=schedule)
        return twin

    return bridge.to_tf_keras(model, wrap=wrap)


def prune(model, train_dataset, *, sparsity=0.75, steps=500, learning_rate=1e-3, verbose=2):
    """Prunes Keras 3 `model` (returning probabilities) to `sparsity` by weight magnitude while
    fine-tuning it for `steps` steps.

    train_dataset: repeated tf.data of (float32 raw images, int labels) batches. Sparsity
    ramps from 0 to `sparsity` over the first half of the steps (polynomial decay), then holds.
    Returns the stripped tf_keras model (plain layers, zeros in the pruned weights).
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1); received {sparsity}.")
    if steps < 2:
        raise ValueError(f"Pruning needs at least 2 fine-tuning steps; received steps={steps}.")
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(1, steps // 2), frequency=max(1, steps // 20))
    twin = prunable_twin(model, schedule)
    twin.compile(optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=0.9),
                 loss=tf_keras.losses.SparseCategoricalCrossentropy(),
                 metrics=["accuracy"])
    twin.fit(train_dataset, epochs=1, steps_per_epoch=steps, verbose=verbose,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    with tf_keras.utils.custom_object_scope(bridge.TWIN_OBJECTS):
        stripped = tfmot.sparsity.keras.strip_pruning(twin)
    logging.info("Pruned %s to %.3f sparsity.", model.name, weight_sparsity(stripped))
    return stripped


def weight_sparsity(model):
    """Fraction of zeros among the kernels of the prunable layers (conv, dense)."""
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, PRUNABLE):
            kernel = np.asarray(layer.get_weights()[0])
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total if total else 0.0


def zipped_size(content_or_path):
    """Size in bytes after gzip -9 of a file or of bytes."""
    if isinstance(content_or_path, (str, os.PathLike)):
        with open(content_or_path, "rb") as f:
            content_or_path = f.read()
    return len(gzip.compress(bytes(content_or_path), compresslevel=9, mtime=0))


def fine_tune(model, stream, data, spec) -> FineTuned:
    """The `pruned` row's fine-tune: `prune` `model` to `spec.sparsity` over
    `spec.fine_tune_steps` steps of `stream` (the run's train split). `data` is unused."""
    del data
    tuned = prune(model, stream, sparsity=spec.sparsity, steps=spec.fine_tune_steps,
                  learning_rate=spec.fine_tune_learning_rate)
    return FineTuned(tuned, {"reference": "pruned tf_keras model",
                             "sparsity": weight_sparsity(tuned)})


def size_report(content, model) -> dict:
    """The `pruned` row's figures: gzip sizes of the written file (`content`, bytes) and of the
    dense float32 conversion of the Keras `model` it was pruned from, and their ratio."""
    from export import formats

    zipped, dense = zipped_size(content), zipped_size(formats.convert_model(model))
    return {"zipped_bytes": zipped, "dense_zipped_bytes": dense, "zip_ratio": dense / zipped}
