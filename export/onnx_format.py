"""ONNX for x86 servers: the model, its evaluation view and its labels in one `.onnx` file.

    write_onnx(model, "model_float32.onnx", view, class_names)
    model = OnnxModel("model_float32.onnx")          # ONNX Runtime, CPU
    probabilities = model.predict(images_uint8)     # (N, h, w, C) of any size -> (N, classes)

The file takes what a server receives after decoding: uint8 RGB images (B, h, w, 3), any batch
size, at the view's size before padding (`view.inner_size`); the conversion to the model's
channels (ITU-R 601 luma for 1-channel models), the padding and the normalization are inside
it, as in the TFLite frame files (`export.formats.frames_to_inputs`). Its `metadata_props`
hold the labels, the view and the input contract (`read_onnx_metadata`), so a runner needs
nothing beside the file.

Why tf2onnx, called on our own `tf.function`, and not Keras' `model.export(format="onnx")`:
on the TensorFlow backend Keras' export *is* `tf2onnx.convert.from_function`, but of the
model's own `call` with its float32 input signature; a uint8 input with the view in front
would need a wrapping Keras layer (no Lambda layers here) around TF ops. Both converted our
graph (ImageNormalization, FusedBatchNormalization, ZeroPadShortcut) and agreed with Keras
(tf2onnx 1.17.0, onnx 1.23.2, onnxruntime 1.32.0, TF 2.21, protobuf 7; tf2onnx 1.17 needs no
numpy-2 patch, which Keras' export applies by setting `np.object` process-wide). What neither
converts is the view's antialiased resize (TF's ScaleAndTranslate op: "No Op registered"), so
the resize to the input size stays outside the file, where an app's image decoder does it:
`OnnxModel.predict` resizes with the view's own `train.views.resize`, as MediaPipe resizes
frames for a .tflite.

No int8 ONNX: ONNX Runtime's static QDQ quantization (per-channel int8, calibrated) of these
files was not faster than float32 on this CPU (Xeon with AVX512-VNNI and AMX, 2 cores, batch
1, median of 15-30 runs, twice): ResNet-20 32x32 0.94 vs 0.65 ms at 1 thread, 0.71 vs 0.47 ms
at 2; ResNet-18 224x224 22.5 vs 24.6 ms at 1 thread (0.92x, within run-to-run noise), 13.8 vs
12.1 ms at 2 (1.14x). LiteRT
float32 of the same frames file: 0.81 / 0.49 ms and 32.9 / 16.3 ms, so ONNX Runtime float32 is
the fastest float runtime there. `benchmarks/bench_export.py` measures the int8 peer again.
"""

import dataclasses
import json
import os

import numpy as np

LABELS_KEY = "labels"  # JSON list of class names, index order
VIEW_KEY = "view"  # JSON of train.views.View.to_dict()
INPUT_KEY = "input"  # one sentence: the input contract
INSTALL = "pip install onnxruntime tf2onnx"
OPSET = 17


def available():
    """None when ONNX Runtime imports, else a one-line reason."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed: {INSTALL} ({e})"
    return None


def _serving_function(model, view):
    import tensorflow as tf

    from export import formats

    model = formats.probabilities_model(formats.as_float32(model))
    h, w = view.inner_size
    spec = tf.TensorSpec((None, h, w, 3), tf.uint8, name="images")

    def serve(images):
        x = formats.frames_to_inputs(tf.cast(images, tf.float32), view)
        return {"probabilities": model(x, training=False)}

    return tf.function(serve, input_signature=[spec]), spec


def write_onnx(model, path, view, class_names, *, description="", opset=OPSET) -> str:
    """Writes `model` (Keras 3, raw pixels in) as an ONNX file at `path` (atomically) taking
    uint8 RGB images (B, *view.inner_size, 3) and returning "probabilities" (B, classes);
    labels, view and input contract in its metadata_props. Returns `path`."""
    try:
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs tf2onnx: {INSTALL} ({e})") from None
    from train import rundir
    from train.console import native_stderr_quiet

    class_names = [str(n) for n in class_names]
    function, spec = _serving_function(model, view)
    outputs = model.output_shape[-1] if hasattr(model, "output_shape") else None
    if outputs is not None and outputs != len(class_names):
        raise ValueError(f"The model has {outputs} outputs but {len(class_names)} class names "
                         f"were given ({class_names[:5]}...): pass the dataset's class names.")
    with native_stderr_quiet():
        proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset)
    h, w = view.inner_size
    props = {LABELS_KEY: json.dumps(class_names), VIEW_KEY: json.dumps(view.to_dict()),
             INPUT_KEY: f"uint8 RGB images (batch, {h}, {w}, 3), values 0-255, resized to "
                        f"{h}x{w} by the caller; view and normalization inside"}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = description or f"{getattr(model, 'name', 'model')} (keras-resnet)"
    proto.producer_name = "keras-resnet (tf2onnx)"
    rundir.atomic_write(os.fspath(path), proto.SerializeToString())
    return os.fspath(path)


@dataclasses.dataclass(frozen=True)
class OnnxMetadata:
    """What a keras-resnet .onnx file says about itself: its labels and its evaluation view
    (a `train.views.View`); `input_size` (h, w) is what images are resized to."""

    labels: tuple
    view: object
    description: str

    @property
    def input_size(self) -> tuple:
        return self.view.inner_size


def read_onnx_metadata(session_or_path) -> OnnxMetadata:
    """The labels and view written by `write_onnx`; ValueError naming what is missing."""
    from train import views

    session = session_or_path if hasattr(session_or_path, "get_modelmeta") \
        else _session(session_or_path, 1)
    meta = session.get_modelmeta()
    props = meta.custom_metadata_map
    missing = [k for k in (LABELS_KEY, VIEW_KEY) if k not in props]
    if missing:
        raise ValueError(f"{getattr(session, '_model_path', session_or_path)} has no {missing} "
                         f"in its metadata_props (keys: {sorted(props)}): it was not written by "
                         "keras-resnet's export; export it again with `python -m export`.")
    return OnnxMetadata(tuple(json.loads(props[LABELS_KEY])),
                        views.View.from_dict(json.loads(props[VIEW_KEY])), meta.description)


def _session(path, num_threads):
    reason = available()
    if reason:
        raise ImportError(reason)
    import onnxruntime as ort

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file: expected an .onnx model.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own pybind error types)
        raise ValueError(f"ONNX Runtime cannot load {path} ({type(e).__name__}: {e}); export "
                         "it again with `python -m export`.") from None


class OnnxModel:
    """An .onnx file of `write_onnx` in ONNX Runtime (CPU): `predict(uint8 images)`."""

    def __init__(self, path, num_threads=2):
        self.path = os.fspath(path)
        self.session = _session(self.path, num_threads)
        self.metadata = read_onnx_metadata(self.session)
        (self._input,) = self.session.get_inputs()
        self.labels = self.metadata.labels
        self.view = self.metadata.view
        self.input_shape = (*self.metadata.input_size, 3)

    def frames(self, images):
        """uint8 (N, h, w, C) images of any size, C 1, 3 or 4 -> uint8 RGB (N, *input_size, 3)
        as the file takes them: images at another size go through the view's resize step
        (stretch or center crop; bilinear, antialiased, rounded); images already at the input
        size are frames (already cropped, as export's verification and a camera pipeline give
        them) and pass unchanged; gray repeated to RGB, alpha dropped."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.dtype != np.uint8:
            raise ValueError(f"{self.path} takes uint8 images (N, h, w, 1|3|4); received "
                             f"{images.dtype} {images.shape}.")
        images = images[..., :3] if images.shape[-1] == 4 else images
        if tuple(images.shape[1:3]) != self.input_shape[:2]:
            from train import views

            view = dataclasses.replace(self.view, channels=images.shape[-1])
            images = views.resize(images, view).numpy().astype(np.uint8)
        return np.repeat(images, 3, -1) if images.shape[-1] == 1 else images

    def predict(self, images, batch_size=100):
        """uint8 images (N, h, w, C) -> float32 probabilities (N, classes)."""
        frames = self.frames(images)
        return np.concatenate([
            self.session.run(None, {self._input.name: frames[i:i + batch_size]})[0]
            for i in range(0, len(frames), batch_size)]).astype(np.float32)

    def latency_ms(self, runs=50, warmup=5):
        """Median batch-1 latency in milliseconds (input: zeros)."""
        from export.verify import median_ms

        feed = {self._input.name: np.zeros((1, *self.input_shape), np.uint8)}
        return median_ms(lambda: self.session.run(None, feed), runs, warmup)


def verify_onnx(path, frames, labels, reference, *, min_agreement, threads=(1, 2),
                latency_runs=50, name="onnx"):
    """`export.verify.verify_tflite` for an .onnx file: ONNX Runtime on uint8 RGB `frames`
    (N, *input_size, 3) against `reference` probabilities (the Keras model on the same frames).
    Returns (report row, the file's probabilities); does not raise on disagreement."""
    from export import verify

    model = OnnxModel(path, num_threads=max(threads))
    probabilities = model.predict(frames)
    row = {"format": name, "file": os.path.basename(path), "size_bytes": os.path.getsize(path),
           **verify.compare(probabilities, reference, np.asarray(labels)),
           "input_dtype": "uint8 (any batch)", "runtime": "ONNX Runtime"}
    row["latency_ms"] = {str(n): round(OnnxModel(path, num_threads=n).latency_ms(latency_runs),
                                       3) for n in threads}
    row["min_agreement"] = min_agreement
    row["passed"] = row["agreement"] >= min_agreement
    return row, probabilities
