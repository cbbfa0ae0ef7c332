"""What an export writes and how it is checked: the format table and the export spec.

Each format is one row: its file, how it is written and verified (`writer`), whether its
weights and activations are integers, the fine-tune it starts from, the extra figures its
report carries, and which agreement threshold it must meet. The orchestrator
(`export.exporter`) and the CLI read this table; nothing else lists formats. The table is data:
its functions are imported when called, so reading it (the CLI's flags) imports no TensorFlow.
"""

import dataclasses
import importlib
from typing import NamedTuple

WRITERS = ("saved_model", "tflite", "onnx")
"""How a format is written and verified: `export.exporter` has one function for each."""

SOURCE_INPUTS = {(False, False): "raw", (False, True): "raw_int",
                 (True, False): "frames", (True, True): "frames_int"}
"""(frames, integer) -> the input of the SavedModel a TFLite file converts from
(`export.formats.source_saved_model`)."""
INPUTS = tuple(SOURCE_INPUTS.values())


@dataclasses.dataclass(frozen=True)
class Step:
    """A function of another export module, `module.function`, imported when called."""

    module: str
    function: str

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.function)(*args, **kwargs)


class FineTuned(NamedTuple):
    """What a format's `fine_tune` returns: the model to convert (a tf_keras twin) and what
    the format's report row says about it."""

    model: object
    report: dict


@dataclasses.dataclass(frozen=True)
class Format:
    """One export target.

    writer: one of WRITERS. quantized: compared with `min_agreement_int8` (else
    `min_agreement_float`). integer: every op must be an integer op (its float I/O boundary
    aside), calibrated on training images.
    fine_tune: None, or `(Keras model, training stream, export.inputs.ExportData, ExportSpec)
        -> FineTuned`, run before converting (the stream: `export.inputs.train_stream`).
    extra_report: None, or `(the written file's bytes, the Keras model) -> dict` of figures
        for the report row.
    """

    name: str
    file: str
    writer: str = "tflite"
    quantized: bool = False
    integer: bool = False
    fine_tune: Step | None = None
    extra_report: Step | None = None

    def __post_init__(self):
        if self.writer not in WRITERS:
            raise ValueError(f"Format {self.name!r}: writer {self.writer!r} is not one of "
                             f"{WRITERS}.")

    @property
    def tflite(self) -> bool:
        return self.writer == "tflite"

    def source_input(self, frames: bool) -> str:
        """The input (one of INPUTS) of the SavedModel this TFLite format converts from."""
        return SOURCE_INPUTS[(bool(frames), self.integer)]


FORMAT_TABLE = (
    Format("saved_model", "saved_model", writer="saved_model"),
    Format("float32", "model_float32.tflite"),
    Format("float16", "model_float16.tflite"),
    Format("dynamic", "model_dynamic_int8.tflite", quantized=True),
    Format("int8", "model_int8.tflite", quantized=True, integer=True),
    Format("int8_io", "model_int8_io.tflite", quantized=True, integer=True),
    Format("qat", "model_qat_int8.tflite", quantized=True, integer=True,
           fine_tune=Step("export.qat", "fine_tune")),
    Format("pruned", "model_pruned.tflite", fine_tune=Step("export.prune", "fine_tune"),
           extra_report=Step("export.prune", "size_report")),
    # uint8 RGB images at any batch size, for x86 servers (export.onnx_format); onnxruntime
    # and tf2onnx come with the export extra (setup.py), so it is among the defaults
    Format("onnx", "model.onnx", writer="onnx"),
)
FORMATS = {f.name: f for f in FORMAT_TABLE}
FILES = {f.name: f.file for f in FORMAT_TABLE}
DEFAULT_FORMATS = ("saved_model", "float32", "float16", "dynamic", "int8", "int8_io", "onnx")
IO_DTYPES = ("uint8", "int8")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What to export and how to check it.

    formats: any of FORMATS. dataset / data_dir: the `train.data` dataset for calibration,
    fine-tuning and verification (default: the run's recipe). A run's own splits are used:
    its `train_split` calibrates and fine-tunes, its `test_split` verifies ('train' and 'test'
    for a model without a run). eval_images: held-out images to verify on (all of the test
    split when it has fewer; the report says which). calibration_images: the first training
    images, for int8 calibration (and QAT's initial ranges).
    frames: TFLite files take camera frames, uint8 RGB (1, h, w, 3) at the view's size before
    padding, with the conversion to the model's channels and padding inside the graph (what
    MediaPipe and phone apps feed); False keeps the Keras model's own float32 input.
    io_dtype: the integer type of int8_io's output (and input, without frames).
    min_agreement_float / min_agreement_int8: the least top-1 agreement with the reference for
    float formats and quantized ones (also MediaPipe's with LiteRT on the same frames).
    fine_tune_*: QAT and pruning fine-tuning (SGD, momentum 0.9); augment: its augmentation
    (default: the recipe's, else "none"). sparsity: pruning target. threads, latency_runs:
    batch-1 latency. mediapipe: 'auto' runs MediaPipe's ImageClassifier on every .tflite when
    it is installed (and says so when it is not), 'on' requires it, 'off' skips it.
    author, license, version: TFLite Metadata fields.
    """

    formats: tuple = DEFAULT_FORMATS
    dataset: str | None = None
    data_dir: str | None = None
    eval_images: int = 10_000
    calibration_images: int = 500
    frames: bool = True
    io_dtype: str = "uint8"
    min_agreement_float: float = 0.99
    min_agreement_int8: float = 0.98
    fine_tune_steps: int = 300
    fine_tune_batch_size: int = 64
    fine_tune_learning_rate: float = 1e-3
    augment: str | None = None
    sparsity: float = 0.75
    threads: tuple = (1, 2)
    latency_runs: int = 50
    seed: int = 0
    mediapipe: str = "auto"
    author: str = "keras-resnet"
    license: str = "unspecified (set --license)"
    version: str = ""

    def __post_init__(self):
        fmts = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        fmts = tuple(dict.fromkeys(fmts))  # each once, in the order given
        object.__setattr__(self, "formats", fmts)
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        unknown = [f for f in fmts if f not in FORMATS]
        if unknown or not fmts:
            raise ValueError(f"Unknown export format(s) {unknown or list(fmts)}: choose from "
                             f"{list(FORMATS)}.")
        if self.io_dtype not in IO_DTYPES:
            raise ValueError(f"io_dtype must be one of {IO_DTYPES}; received {self.io_dtype!r}.")
        if self.mediapipe not in ("auto", "on", "off"):
            raise ValueError(f"mediapipe must be 'auto', 'on' or 'off'; received "
                             f"{self.mediapipe!r}.")
        for name in ("min_agreement_float", "min_agreement_int8"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; received {getattr(self, name)}.")
        for name in ("eval_images", "calibration_images", "fine_tune_batch_size", "latency_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; received {getattr(self, name)}.")
        if self.fine_tune_steps < 2 and any(FORMATS[f].fine_tune for f in fmts):
            raise ValueError(f"fine_tune_steps must be >= 2 for qat/pruned; received "
                             f"{self.fine_tune_steps}.")
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1); received {self.sparsity}.")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be positive thread counts; received {self.threads}.")

    def min_agreement(self, fmt: str) -> float:
        return self.min_agreement_int8 if FORMATS[fmt].quantized else self.min_agreement_float
