"""One converter per target: a SavedModel for serving, TFLite in every flavour of `export.spec`.

A TFLite conversion starts from a *source*: a SavedModel that `source_saved_model` writes
around the model (a Keras 3 model, or the tf_keras twin of QAT and pruning), with one of three
inputs (`export.spec.INPUTS`; a format row names its own, `Format.source_input`):
- 'raw': float32 (B, H, W, C) model inputs, pixels in [0, 255], as the Keras model takes them;
- 'frames': uint8 RGB camera frames (1, h, w, 3) at the view's size before padding, cast to
  float, converted to the model's channels (ITU-R 601 luma for 1-channel models) and padded
  inside the graph: what MediaPipe and phone apps feed;
- 'frames_int': the same frames as float32 pinned to [0, 255] by a fake-quant op, so that an
  integer model's uint8 input has scale 1 and zero point 0: its values are the pixels;
- 'raw_int': 'raw' pinned the same way (integer formats exported with frames=False), whatever
  range the calibration images happen to cover.
Models take raw pixels and return probabilities; the normalization is inside them.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import keras_resnet  # noqa: F401  (registers the custom layers for loading)
from export.spec import FORMATS, INPUTS
from train import views
from train.console import native_stderr_quiet

_IO = {"uint8": tf.uint8, "int8": tf.int8}


# ------------------------------------------------------------------------------ the model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


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


def outputs_probabilities(model) -> bool:
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


def input_shape(model) -> tuple:
    """(H, W, C) of a single-input image model; ValueError when the model is not one."""
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ()
    if len(shape) != 3 or None in shape:
        raise ValueError(
            f"Export needs a model with one image input of fixed size (H, W, C); {model.name!r} "
            f"takes {model.input_shape}. Rebuild it with e.g. input_shape=(224, 224, 3).")
    return shape


# -------------------------------------------------------------------- sources and serving


# ITU-R BT.601 luma. tf.image.rgb_to_grayscale's weights (0.2989, 0.5870, 0.1140) sum to
# 0.9999, which turns a gray frame's 255 into 254.97; these sum to 1, so a grayscale image sent
# as RGB (what MediaPipe does with one) reaches the model with its own values.
LUMA = (0.299, 0.587, 0.114)


def frames_to_inputs(frames, view):
    """float32 RGB frames (B, h, w, 3) at the view's inner size -> the model's input."""
    if view.channels == 1:  # the same ops as tf.image.rgb_to_grayscale, with LUMA
        frames = tf.expand_dims(tf.tensordot(frames, tf.constant(LUMA, frames.dtype), [-1, -1]),
                                -1)
    return views.finish(frames, view)


def _input_fn(model, view, kind):
    """(function, its input signature) of a source with input `kind` (see the module doc)."""
    shape = input_shape(model) if isinstance(model, keras.Model) else tuple(model.input_shape[1:])

    def pin(x):  # uint8 quantization with scale 1, zero point 0: the values are the pixels
        return tf.quantization.fake_quant_with_min_max_args(x, min=0.0, max=255.0, num_bits=8)

    if kind in ("raw", "raw_int"):
        pinned = kind == "raw_int"
        return ((lambda x: model(pin(x) if pinned else x, training=False)),
                tf.TensorSpec((None, *shape), tf.float32, name="images"))
    h, w = view.inner_size
    if kind == "frames":
        return (lambda f: model(frames_to_inputs(tf.cast(f, tf.float32), view), training=False),
                tf.TensorSpec((1, h, w, 3), tf.uint8, name="frames"))
    return ((lambda f: model(frames_to_inputs(pin(f), view), training=False)),
            tf.TensorSpec((1, h, w, 3), tf.float32, name="frames"))


def _write_archive(model, fn, signature, directory):
    if isinstance(model, keras.Model):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", fn, input_signature=[signature])
        archive.write_out(directory, verbose=False)
        return directory
    module = tf.Module()
    module.model = model  # a tf_keras model: tracked by tf.Module
    function = tf.function(fn, input_signature=[signature])
    tf.saved_model.save(module, directory, signatures={"serving_default":
                                                       function.get_concrete_function()})
    return directory


def source_saved_model(model, directory, view=None, kind="raw"):
    """Writes the conversion source of `model` (Keras 3 or tf_keras) with input `kind`."""
    if kind not in INPUTS:
        raise ValueError(f"source input {kind!r} is not one of {INPUTS}.")
    fn, signature = _input_fn(model, view, kind)
    return _write_archive(model, fn, signature, directory)


def saved_model(model, directory, view, class_names):
    """SavedModel whose `serving_default` takes uint8 images of any size (B, h, w, C), named
    "images", applies the evaluation view (`train.views.apply`: resize, pad) and returns
    {"probabilities": (B, classes), "class_ids": (B,)}; labels.txt is in its assets/."""
    model = probabilities_model(model)

    def serve(images):
        probabilities = model(views.apply(images, view), training=False)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=-1)}

    signature = tf.TensorSpec((None, None, None, view.channels), tf.uint8, name="images")
    _write_archive(model, serve, signature, directory)
    assets = os.path.join(directory, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, "labels.txt"), "w") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    return directory


# ------------------------------------------------------------------------------- TFLite


def check_representative(images, shape):
    """float32 array (N, *shape) for calibration; ValueError if it does not fit the input."""
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise ValueError(
            f"The representative dataset must be a non-empty batch of images of shape "
            f"(N, {', '.join(map(str, shape))}) matching the model's input; received an array of "
            f"shape {images.shape}. Use training images at the model's input size.")
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"The representative dataset must hold numbers; received {images.dtype}.")
    return images.astype(np.float32)


def _source_shape(directory):
    signature = tf.saved_model.load(directory).signatures["serving_default"]
    (spec,) = tf.nest.flatten(signature.structured_input_signature)
    return tuple(spec.shape[1:])


def _configure(converter, fmt, representative, io_dtype, frames, per_channel=True):
    if fmt in ("float32", "pruned"):
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if not FORMATS[fmt].integer:
        return
    converter.representative_dataset = lambda: ([representative[i:i + 1]]
                                                for i in range(len(representative)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not per_channel:  # one scale per weight tensor (measured by benchmarks/bench_export.py)
        converter._experimental_disable_per_channel = True
    if frames:
        converter.inference_input_type = tf.uint8
    if fmt == "int8_io":
        converter.inference_output_type = _IO[io_dtype]
        if not frames:
            converter.inference_input_type = _IO[io_dtype]


def tflite(source_dir, fmt, representative=None, io_dtype="uint8", frames=False,
           per_channel=True) -> bytes:
    """The .tflite bytes of format `fmt` from a source SavedModel (`source_saved_model`).

    representative: float32 calibration inputs of the source's input shape (integer formats):
    real training images. frames: the source takes pinned frames (uint8 integer input).
    per_channel: int8 weights with one scale per output channel (else per tensor)."""
    if fmt not in FORMATS or not FORMATS[fmt].tflite:
        raise ValueError(f"{fmt!r} is not a TFLite format: use one of "
                         f"{[f for f in FORMATS if FORMATS[f].tflite]}.")
    if FORMATS[fmt].integer:
        representative = check_representative(representative, _source_shape(source_dir))
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(source_dir))
    _configure(converter, fmt, representative, io_dtype, frames, per_channel)
    with native_stderr_quiet():
        return converter.convert()


def convert_model(model, fmt="float32", representative=None, view=None, kind="raw", **kwargs):
    """`tflite` of a model in one call (a temporary source SavedModel)."""
    with tempfile.TemporaryDirectory(prefix="keras_resnet_export_") as directory:
        source_saved_model(model, directory, view, kind)
        return tflite(directory, fmt, representative, frames=kind == "frames_int", **kwargs)


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
