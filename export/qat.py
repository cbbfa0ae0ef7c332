"""Quantization-aware training (QAT) with TFMOT on the tf_keras twin (`export.bridge`).

`quantize` annotates the twin and applies TFMOT's default 8-bit scheme, `calibrate_ranges` sets
its activation ranges from real images, `quantization_aware_training` fine-tunes it; `fine_tune`
is the `qat` format row's step (`export.spec`), and the exporter converts its result to int8
TFLite (`export.formats.tflite(..., "qat")`).
"""

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from absl import logging

from export.bridge import TWIN_OBJECTS, Standardize, ZeroPadShortcut, to_tf_keras
from export.spec import FineTuned

# ------------------------------------------------------------------------------ quantization


class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes nothing: for layers that move values without changing them (slice, pad)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


QUANTIZE_OBJECTS = {**TWIN_OBJECTS, "NoOpQuantizeConfig": NoOpQuantizeConfig}


def _annotate(twin, _):
    """Annotates every twin for TFMOT's default 8-bit scheme but Standardize: the input
    normalization stays float in the QAT graph (a QuantizeLayer follows it), and the converter
    quantizes it from the representative images, as in post-training quantization."""
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    if isinstance(twin, Standardize):
        return twin
    if isinstance(twin, ZeroPadShortcut):
        return annotate(twin, NoOpQuantizeConfig())
    return annotate(twin)


def quantize(model):
    """A quantization-aware tf_keras twin of Keras 3 `model` (TFMOT default 8-bit scheme)."""
    annotated = to_tf_keras(model, wrap=_annotate)
    with tfmot.quantization.keras.quantize_scope(QUANTIZE_OBJECTS):
        return tfmot.quantization.keras.quantize_apply(annotated)


_EMA_DECAY = 0.999  # TFMOT 0.8's MovingAverageQuantizer, fixed there


def _moving_average_ranges(qat_model):
    """The [min, max] variable pairs that TFMOT updates by EMA (MovingAverageQuantizer)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    def is_ema(quantizer):
        return isinstance(quantizer, quantizers.MovingAverageQuantizer)

    pairs = []
    for layer in qat_model.layers:
        for quantizer, qvars in zip(getattr(layer, "_output_quantizers", None) or [],
                                    [getattr(layer, "_output_quantizer_vars", None)]):
            if is_ema(quantizer) and qvars:
                pairs.append(qvars)
        for activation in getattr(layer, "_quantize_activations", None) or []:
            if is_ema(getattr(activation, "quantizer", None)):
                pairs += [getattr(activation, a) for a in ("_pre_activation_vars",
                                                          "_post_activation_vars")
                          if getattr(activation, a, None)]
        if is_ema(getattr(layer, "quantizer", None)) and getattr(layer, "quantizer_vars", None):
            pairs.append(layer.quantizer_vars)
    return [v for pair in pairs for v in (pair["min_var"], pair["max_var"])]


def calibrate_ranges(qat_model, images, batch_size=64):
    """Sets the activation ranges of a fresh QAT model from `images` (float32 NHWC array).

    TFMOT's activation ranges start at [-6, 6] and follow an EMA (decay 0.999) with no
    de-biasing: after a short fine-tune they are still far from the data's ranges (raw-pixel
    inputs minus a mean span +-255) and clip. This runs the model in training mode over
    `images` (which also sets the weight ranges), de-biases the EMA ranges, and restores the
    layers' own variables (BatchNorm statistics) that training mode moved.
    """
    ema = _moving_average_ranges(qat_model)
    if not ema:
        logging.warning("No moving-average quantizers found in %s: nothing to calibrate.",
                        qat_model.name)
    initial = [v.numpy() for v in ema]
    own = [w for layer in qat_model.layers if hasattr(layer, "layer") for w in layer.layer.weights]
    saved = [w.numpy() for w in own]
    steps = 0
    progbar = tf_keras.utils.Progbar(len(images), unit_name="image")
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        qat_model(batch, training=True)
        steps += 1
        progbar.add(len(batch))
    for w, value in zip(own, saved):
        w.assign(value)
    decay = _EMA_DECAY**steps
    for v, v0 in zip(ema, initial):
        v.assign((v.numpy() - decay * v0) / (1.0 - decay))
    logging.info("Calibrated %d activation ranges over %d batches.", len(ema) // 2, steps)


def quantization_aware_training(model, train_dataset, calibration_images, *, steps=500,
                                learning_rate=1e-3, verbose=2):
    """Quantization-aware fine-tuning of Keras 3 `model` (it must return probabilities: see
    `export.formats.probabilities_model`); returns the QAT tf_keras model.

    train_dataset: repeated tf.data of (float32 raw images, int labels) batches.
    calibration_images: float32 (N, H, W, C) raw training images that set the activation
    ranges before fine-tuning (see `calibrate_ranges`). SGD with momentum 0.9 for `steps` steps
    at `learning_rate`: a fine-tune, so a small rate (the end of the training schedule).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; received {steps}.")
    qat_model = quantize(model)
    calibrate_ranges(qat_model, calibration_images)
    if steps:
        qat_model.compile(optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=0.9),
                          loss=tf_keras.losses.SparseCategoricalCrossentropy(),
                          metrics=["accuracy"])
        qat_model.fit(train_dataset, epochs=1, steps_per_epoch=steps, verbose=verbose)
    return qat_model


def fine_tune(model, stream, data, spec) -> FineTuned:
    """The `qat` row's fine-tune: `quantization_aware_training` of `model` on `stream` (the
    run's train split), its ranges calibrated on `data.calibration` (`export.inputs.ExportData`),
    for `spec.fine_tune_steps` steps at `spec.fine_tune_learning_rate`."""
    tuned = quantization_aware_training(model, stream, data.calibration,
                                        steps=spec.fine_tune_steps,
                                        learning_rate=spec.fine_tune_learning_rate)
    return FineTuned(tuned, {"reference": "QAT tf_keras model",
                             "fine_tune_steps": spec.fine_tune_steps})
