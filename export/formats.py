"""One function per export target: SavedModel for serving, and TFLite in five flavours.

Every TFLite function takes a *source*: a Keras 3 model, a float SavedModel directory written by
`float_saved_model` (convert several formats from one), or a tf_keras model (QAT, pruning).
Models take raw pixels in [0, 255] (float32, NHWC; normalization is inside the model) and return
class probabilities. The functions return the `.tflite` bytes; writing, verifying and moving
files into place is the job of `export.export`.
"""

import dataclasses
import functools
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

import keras_resnet  # noqa: F401  (registers the custom layers for loading)

# Formats of `python -m export --formats`, and the file each one writes.
FILES = {
    "saved_model": "saved_model",
    "float32": "model_float32.tflite",
    "float16": "model_float16.tflite",
    "dynamic": "model_dynamic_int8.tflite",
    "int8": "model_int8.tflite",
    "int8_io": "model_int8_io.tflite",
    "qat": "model_qat_int8.tflite",
    "pruned": "model_pruned.tflite",
}
FORMATS = tuple(FILES)
# Formats whose weights and activations are all integers: only integer builtin ops allowed.
FULLY_INTEGER = ("int8", "int8_io", "qat")
IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}


# ------------------------------------------------------------------------------ the model


def as_float32(model):
    """`model` with float32 compute (a copy when it was trained under a mixed policy)."""
    policies = {layer.dtype_policy.name for layer in _all_layers(model)}
    if policies <= {"float32"}:
        return model

    def to_float32(config):
        if isinstance(config, dict):
            if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") \
                    and "config" in config:
                return {**config, "config": {**config["config"], "name": "float32"}}
            return {k: to_float32(v) for k, v in config.items()}
        if isinstance(config, list):
            return [to_float32(v) for v in config]
        return config

    copy = model.__class__.from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())
    logging.info("Rebuilt %s in float32 (it had dtype policies %s).", model.name, sorted(policies))
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def outputs_probabilities(model):
    """True when the model's last layer ends in softmax (else it returns logits)."""
    last = model.layers[-1]
    while isinstance(last, keras.Model):
        last = last.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "") if activation is not None else ""
    return name == "softmax" or type(last).__name__ == "Softmax"


def probabilities_model(model):
    """`model` itself if it returns probabilities, else `model` followed by a softmax."""
    if outputs_probabilities(model):
        return model
    inputs = keras.Input(model.input_shape[1:], name="images")
    outputs = keras.layers.Softmax(name="probabilities")(model(inputs))
    return keras.Model(inputs, outputs, name=model.name)


def input_shape(model):
    """(H, W, C) of a single-input image model; ValueError when the model is not one."""
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ()
    if len(shape) != 3 or None in shape:
        raise ValueError(
            f"Export needs a model with one image input of fixed size (H, W, C); {model.name!r} "
            f"takes {model.input_shape}. Rebuild it with e.g. input_shape=(224, 224, 3)."
        )
    return shape


# ---------------------------------------------------------------------------- SavedModel


def float_saved_model(model, directory):
    """Writes a SavedModel whose `serving_default` maps float32 raw pixels (B, H, W, C) to
    probabilities: the converters' common source. Returns `directory`."""
    h, w, c = input_shape(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec((None, h, w, c), tf.float32, name="images")],
    )
    archive.write_out(directory, verbose=False)
    return directory


def serving_preprocess(images, spec):
    """uint8 images (B, h, w, C) of any size -> float32 raw pixels (B, H, W, C) for the model.

    `spec` is metadata's "input": "stretch" resizes to the model's size less `pad` zero
    pixels on each side (Fashion-MNIST's 28x28 -> 32x32), then pads; "center_crop" resizes the
    shorter side to `resize_shorter` and takes the central crop (ImageNet evaluation).
    """
    h, w = spec["height"], spec["width"]
    x = tf.cast(images, tf.float32)
    if spec.get("resize", "stretch") == "center_crop":
        hw = tf.cast(tf.shape(x)[1:3], tf.float32)
        scale = float(spec["resize_shorter"]) / tf.reduce_min(hw)
        new = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), max(h, w))
        x = tf.image.resize(x, new, antialias=True)
        top, left = (new[0] - h) // 2, (new[1] - w) // 2
        return tf.ensure_shape(x[:, top:top + h, left:left + w, :], [None, h, w, spec["channels"]])
    pad = int(spec.get("pad", 0))
    inner = (h - 2 * pad, w - 2 * pad)
    same = tf.reduce_all(tf.equal(tf.shape(x)[1:3], inner))
    x = tf.cond(same, lambda: x, lambda: tf.image.resize(x, inner, antialias=True))
    if pad:
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.ensure_shape(x, [None, h, w, spec["channels"]])


def saved_model(model, directory, metadata):
    """SavedModel whose `serving_default` takes uint8 images of any size (B, h, w, C), named
    "images", and returns {"probabilities": (B, classes), "class_ids": (B,)}.

    Resizing and the model's preprocessing are inside; labels.txt and metadata.json are copied
    into the SavedModel's assets/.
    """
    spec = metadata["input"]
    model = probabilities_model(model)

    def serve(images):
        probabilities = model(serving_preprocess(images, spec), training=False)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", serve,
        input_signature=[tf.TensorSpec((None, None, None, spec["channels"]), tf.uint8,
                                       name="images")],
    )
    archive.write_out(directory, verbose=False)
    assets = os.path.join(directory, "assets")
    os.makedirs(assets, exist_ok=True)
    write_metadata(assets, metadata)
    return directory


# ------------------------------------------------------------------------------- TFLite


def _convert(source, configure=None):
    """Converts `source` to TFLite bytes; `configure(converter)` sets the options."""
    if isinstance(source, (str, os.PathLike)):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
    elif isinstance(source, tf_keras.Model):
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
    elif isinstance(source, keras.Model):
        with tempfile.TemporaryDirectory(prefix="keras_resnet_export_") as directory:
            return _convert(float_saved_model(source, directory), configure)
    else:
        raise ValueError(f"Cannot convert a {type(source).__name__}: pass a Keras model, a "
                         "tf_keras model or a SavedModel directory.")
    if configure is not None:
        configure(converter)
    return converter.convert()


def source_input_shape(source):
    """(H, W, C) that a conversion source takes."""
    if isinstance(source, (str, os.PathLike)):
        signature = tf.saved_model.load(str(source)).signatures["serving_default"]
        (spec,) = tf.nest.flatten(signature.structured_input_signature)
        return tuple(spec.shape[1:])
    return tuple(source.input_shape[1:])


def tflite_float32(source):
    """Float32 TFLite: the reference conversion, no quantization."""
    return _convert(source)


def tflite_float16(source):
    """Float16 weights (half the size); computation in float32 (or fp16 on GPU delegates)."""

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    return _convert(source, configure)


def tflite_dynamic(source):
    """Dynamic-range quantization: int8 weights, activations quantized on the fly."""

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    return _convert(source, configure)


def check_representative(images, shape):
    """float32 array (N, H, W, C) of raw pixels for calibration; ValueError if it does not fit."""
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise ValueError(
            f"The representative dataset must be a non-empty batch of images of shape "
            f"(N, {', '.join(map(str, shape))}) matching the model's input; received an array of "
            f"shape {images.shape}. Use training images at the model's input size."
        )
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"The representative dataset must hold numbers; received {images.dtype}.")
    return images.astype(np.float32)


def tflite_int8(source, representative, io_dtype=None):
    """Full-integer int8: per-channel int8 weights, int8 activations calibrated on
    `representative` (float32 raw pixels, (N, H, W, C): real training images).

    io_dtype None keeps float32 input and output (quantize/dequantize at the ends); "int8" or
    "uint8" makes the I/O integer too (accelerators, microcontrollers).
    """
    if io_dtype is not None and io_dtype not in IO_DTYPES:
        raise ValueError(f"Unknown integer I/O type {io_dtype!r}: expected one of "
                         f"{sorted(IO_DTYPES)} (or None for float I/O).")
    representative = check_representative(representative, source_input_shape(source))

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([representative[i:i + 1]]
                                                    for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype is not None:
            converter.inference_input_type = IO_DTYPES[io_dtype]
            converter.inference_output_type = IO_DTYPES[io_dtype]

    return _convert(source, configure)


def tflite_quantization_aware(qat_model, representative, io_dtype=None):
    """Int8 TFLite from a quantization-aware tf_keras model: the ranges learned in training,
    and `representative` images (as for `tflite_int8`) for ops TFMOT leaves unannotated (the
    constant operands of the in-model normalization), so that the model is fully integer."""
    return tflite_int8(qat_model, representative, io_dtype)


def non_integer_ops(model_content):
    """Ops of a TFLite model that read or write float tensors, as "OP (dtypes)" strings.

    The QUANTIZE of a float model input and the DEQUANTIZE of a float model output are the
    model's boundary, not computation, and are not listed: a fully-integer model gives [].
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(model_content))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    model_inputs = {d["index"] for d in interpreter.get_input_details()}
    model_outputs = {d["index"] for d in interpreter.get_output_details()}
    found = []
    for op in interpreter._get_ops_details():
        ins = [i for i in op["inputs"] if i >= 0]
        outs = [i for i in op["outputs"] if i >= 0]
        if op["op_name"] == "QUANTIZE" and set(ins) <= model_inputs:
            continue
        if op["op_name"] == "DEQUANTIZE" and set(outs) <= model_outputs:
            continue
        types = [dtypes[i] for i in ins + outs]
        if any(t.startswith(("float", "bfloat", "complex")) for t in types):
            found.append(f"{op['op_name']} ({', '.join(types)})")
    return found


# ------------------------------------------------------------------------------ metadata


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How raw images become the model's input: what metadata.json's "input" says."""

    height: int
    width: int
    channels: int
    resize: str = "stretch"  # or "center_crop"
    pad: int = 0
    resize_shorter: int | None = None


def metadata(model, class_names, input_spec, dataset=None, preprocessing=None):
    """The metadata.json dict: input size and preprocessing, class names, output kind."""
    return {
        "format_version": 1,
        "model": model.name,
        "dataset": dataset,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input": {
            **dataclasses.asdict(input_spec),
            "dtype": "float32",
            "pixel_range": [0, 255],
            "layout": "NHWC",
        },
        "preprocessing": preprocessing or describe_preprocessing(model),
        "output": "probabilities",
        "models": {},
    }


def describe_preprocessing(model):
    """What the model does to raw pixels before its first convolution, read from its layers."""
    steps = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(keras.ops.convert_to_numpy(layer.mean))
            var = np.asarray(keras.ops.convert_to_numpy(layer.variance))
            steps.append({"layer": layer.name, "op": "(x - mean) / sqrt(variance)",
                          "mean_shape": list(mean.shape[1:]),
                          "mean_average": round(float(mean.mean()), 4),
                          "std_average": round(float(np.sqrt(var).mean()), 4)})
        elif isinstance(layer, keras_resnet.ImageNormalization):
            steps.append({"layer": layer.name, "op": "(x - mean) / std", "mean": layer.mean,
                          "std": layer.std, "reverse_channels": layer.reverse_channels})
    return {"inside_model": bool(steps), "steps": steps,
            "note": "feed raw pixels in [0, 255]; the model normalizes them itself"
            if steps else "the model takes its input as given"}


def write_metadata(directory, meta):
    """Writes labels.txt (one class name a line) and metadata.json into `directory`."""
    with open(os.path.join(directory, "labels.txt"), "w") as f:
        f.write("".join(f"{name}\n" for name in meta["class_names"]))
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def read_metadata(model_path):
    """metadata.json for an exported file: beside a .tflite, or in a SavedModel's assets/."""
    model_path = os.path.abspath(model_path)
    candidates = [os.path.join(os.path.dirname(model_path), "metadata.json")]
    if os.path.isdir(model_path):
        candidates.insert(0, os.path.join(model_path, "assets", "metadata.json"))
    for path in candidates:
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    raise ValueError(f"No metadata.json for {model_path}: looked at {candidates}. Export the model "
                     "with `python -m export`, which writes it beside every model.")
