"""What an export writes and how it is checked: the format table and the export spec.

Each format is one row: its file, whether its weights and activations are integers, whether it
is fine-tuned first, and which agreement threshold it must meet. The orchestrator
(`export.exporter`) and the CLI read this table; nothing else lists formats.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Format:
    """One export target.

    quantized: compared with `min_agreement_int8` (else `min_agreement_float`).
    integer: every op must be an integer op (its float I/O boundary aside).
    fine_tune: None, 'qat' (quantization-aware training) or 'prune' before converting.
    """

    name: str
    file: str
    quantized: bool = False
    integer: bool = False
    fine_tune: str | None = None
    tflite: bool = True


FORMAT_TABLE = (
    Format("saved_model", "saved_model", tflite=False),
    Format("float32", "model_float32.tflite"),
    Format("float16", "model_float16.tflite"),
    Format("dynamic", "model_dynamic_int8.tflite", quantized=True),
    Format("int8", "model_int8.tflite", quantized=True, integer=True),
    Format("int8_io", "model_int8_io.tflite", quantized=True, integer=True),
    Format("qat", "model_qat_int8.tflite", quantized=True, integer=True, fine_tune="qat"),
    Format("pruned", "model_pruned.tflite", fine_tune="prune"),
)
FORMATS = {f.name: f for f in FORMAT_TABLE}
FILES = {f.name: f.file for f in FORMAT_TABLE}
DEFAULT_FORMATS = ("saved_model", "float32", "float16", "dynamic", "int8", "int8_io")
IO_DTYPES = ("uint8", "int8")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What to export and how to check it.

    formats: any of FORMATS. dataset / data_dir: the `train.data` dataset for calibration,
    fine-tuning and verification (default: the run's recipe). eval_images: held-out test
    images to verify on (all of the test split when it has fewer; the report says which).
    calibration_images: training images for int8 calibration (and QAT's initial ranges).
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
