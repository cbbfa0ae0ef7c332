"""TFLite Metadata for image classifiers: labels and normalization inside the .tflite file.

    content = add_metadata(tflite_bytes, ModelCard(name="resnet20", labels=("cat", "dog")))

MediaPipe Tasks, the TFLite Task Library and Android Studio ML Binding read a ModelMetadata
flatbuffer (`metadata_schema.fbs`, identifier "M001") from the model's "TFLITE_METADATA" entry
and buffer, and labels.txt from an uncompressed zip appended to the model, as tflite-support's
`MetadataPopulator` writes them; here with `flatbuffers.Builder`, without tflite-support.
"""

import dataclasses
import io
import math
import os
import struct
import zipfile

import flatbuffers
from ai_edge_litert import schema_py_generated as _schema
from flatbuffers import encode, packer, util
from flatbuffers.table import Table

METADATA_NAME = "TFLITE_METADATA"  # MetadataPopulator.METADATA_FIELD_NAME
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# All fields written are of schema 1.0.0, which GetMinimumMetadataParserVersion raises only for
# later members (tokenizers, tensor groups, subgraph process units, audio, custom metadata...).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same input gives the same bytes
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}  # ColorSpaceType
_CHANNELS = {"RGB": 3, "GRAYSCALE": 1}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union types
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union type
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_UINT8 = 3  # tflite TensorType


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What the metadata says. The model takes `(pixel - mean) / std` of pixels in [input_min,
    input_max] (mean 0, std 1: raw pixels). height / width None: the model's input size."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    labels: tuple
    color_space: str = "RGB"
    height: int | None = None
    width: int | None = None
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    input_min: float = 0.0
    input_max: float = 255.0
    output_description: str = "probabilities"

    def __post_init__(self):
        texts = ("name", "description", "version", "author", "license", "output_description")
        _require(all(isinstance(getattr(self, f), str) for f in texts) and self.name,
                 f"ModelCard {', '.join(texts)} must be strings, and name not empty.")
        _require(not isinstance(self.labels, str) and len(self.labels) > 0,
                 f"labels must be a non-empty sequence of class names; received {self.labels!r}.")
        bad = [x for x in self.labels
               if not isinstance(x, str) or not x.strip() or "\n" in x or "\r" in x]
        _require(not bad, f"labels must be non-empty one-line strings (labels.txt holds one per "
                          f"line); received {bad[:3]!r}.")
        _require(self.color_space in COLOR_SPACES, f"color_space must be one of "
                 f"{sorted(COLOR_SPACES)}; received {self.color_space!r}.")
        for size in (self.height, self.width):
            _require(size is None or (isinstance(size, int) and size > 0),
                     f"height and width must be positive ints or None; received {size!r}.")
        mean, std = _floats("mean", self.mean), _floats("std", self.std)
        channels = _CHANNELS[self.color_space]
        _require(len(mean) in (1, channels) and len(std) == len(mean),
                 f"mean and std need 1 or {channels} values each for {self.color_space}, as many "
                 f"of one as of the other; received {len(mean)} and {len(std)}.")
        _require(min(std) > 0, f"std must be positive; received {std}.")
        (low,), (high,) = _floats("input_min", self.input_min), _floats("input_max", self.input_max)
        _require(low < high, f"input_min must be below input_max; received {low}, {high}.")
        for field, value in (("labels", tuple(self.labels)), ("mean", mean), ("std", std),
                             ("input_min", low), ("input_max", high)):
            object.__setattr__(self, field, value)


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _floats(field, values):
    try:
        floats = tuple(map(float, values if hasattr(values, "__iter__") else [values]))
        floats = () if isinstance(values, str) else floats
    except (TypeError, ValueError):
        floats = ()
    _require(floats and all(map(math.isfinite, floats)),
             f"{field} must be finite numbers; received {values!r}.")
    return floats


def add_metadata(model_content, card):
    """`model_content` (.tflite bytes) with `card` as TFLite Metadata and labels.txt packed in;
    metadata and packed files already there are replaced."""
    model = _schema.ModelT.InitFromObj(_schema.Model.GetRootAs(_model_bytes(model_content), 0))
    _require(not any(b.offset > 1 for b in model.buffers or []),
             "The model keeps buffers outside the flatbuffer (a model over 2 GB); adding "
             "metadata to such files is not supported.")
    height, width = _check_model(model, card)
    buffer = _schema.BufferT()
    buffer.data = bytearray(_metadata_flatbuffer(card, height, width))
    entries = [m for m in model.metadata or [] if m.name == METADATA_NAME.encode()]
    if entries:
        for entry in entries[1:]:  # two entries would be ambiguous: keep one
            model.metadata.remove(entry)
        model.buffers[entries[0].buffer] = buffer
    else:
        model.buffers = (model.buffers or []) + [buffer]
        entry = _schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = (model.metadata or []) + [entry]
    builder = flatbuffers.Builder(0)  # as MetadataPopulator: the flatbuffer alone, no old zip
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    labels = "".join(f"{label}\n" for label in card.labels).encode("utf-8")
    return _append_zip(bytes(builder.Output()), {LABELS_FILE: labels})


def _check_model(model, card):
    """(height, width) of the input; ValueError where `card` does not fit the model."""
    _require(model.subgraphs, "The TFLite model has no subgraph.")
    graph = model.subgraphs[0]
    _require(len(graph.inputs) == 1 and len(graph.outputs) == 1,
             f"An image classifier has one input and one output; this model has "
             f"{len(graph.inputs)} and {len(graph.outputs)}.")
    image, scores = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    shape = tuple(int(d) for d in (image.shape if image.shape is not None else ()))
    channels = _CHANNELS[card.color_space]
    _require(len(shape) == 4 and shape[3] == channels,
             f"color_space {card.color_space} needs an input of shape (1, H, W, {channels}); "
             f"the model's is {shape}.")
    _require((card.height or shape[1], card.width or shape[2]) == shape[1:3],
             f"The card's height x width {card.height} x {card.width} differs from the model's "
             f"input {shape[1]} x {shape[2]}.")
    classes = int(scores.shape[-1]) if scores.shape is not None and len(scores.shape) else 1
    _require(classes == len(card.labels), f"The model has {classes} outputs but the card "
             f"{len(card.labels)} labels: pass one label per class.")
    quantization, scale, zero = image.quantization, 1.0, 0.0
    if quantization is not None and quantization.scale is not None and len(quantization.scale):
        scale, zero = float(quantization.scale[0]), float(quantization.zeroPoint[0])
    for mean, std in zip(card.mean, card.std):  # MediaPipe feeds uint8 pixels unchanged
        _require(image.type != _UINT8 or (abs(scale * std - 1) <= 0.01 and abs(zero - mean) <= 1),
                 f"The uint8 input (scale {scale:g}, zero point {zero:g}) takes pixels as they "
                 f"come, that is mean {zero:g}, std {1 / scale:g}; the card says mean "
                 f"{card.mean}, std {card.std}. A model of raw pixels needs mean 0, std 1 (and "
                 "int8 calibration images spanning 0..255).")
    return shape[1], shape[2]


def _metadata_flatbuffer(card, height, width):
    """ModelMetadata bytes ("M001"); each table's field count and slots as in the schema."""
    b = flatbuffers.Builder(0)
    size = _table(b, 2, (0, "I", width), (1, "I", height))  # ImageSize
    image = _table(b, 2, (0, "b", COLOR_SPACES[card.color_space]), (1, "o", size))
    norm = _table(b, 2, (0, "o", _vector(b, "f", card.mean)), (1, "o", _vector(b, "f", card.std)))
    unit = _table(b, 2, (0, "B", _NORMALIZATION_OPTIONS), (1, "o", norm))  # ProcessUnit
    image_tensor = _tensor(b, "image", "Input image to be classified.", _IMAGE_PROPERTIES,
                           image, [unit], (card.input_max,), (card.input_min,), [])
    labels = _table(b, 5, (0, "o", b.CreateString(LABELS_FILE)),
                    (1, "o", b.CreateString("Labels of the classes, one per line.")),
                    (2, "b", _TENSOR_AXIS_LABELS))  # AssociatedFile
    scores = _tensor(b, "probability", card.output_description, _FEATURE_PROPERTIES,
                     _table(b, 0), [], (1.0,), (0.0,), [labels])
    subgraph = _table(b, 10, (2, "o", _vector(b, "o", [image_tensor])),
                      (3, "o", _vector(b, "o", [scores])))  # SubGraphMetadata
    texts = [b.CreateString(t) if t else None for t in (
        card.name, card.description, card.version, card.author, card.license, MIN_PARSER_VERSION)]
    root = _table(b, 8, *((slot, "o", t) for slot, t in zip((0, 1, 2, 4, 5, 7), texts)),
                  (3, "o", _vector(b, "o", [subgraph])))  # ModelMetadata
    b.Finish(root, METADATA_IDENTIFIER)
    return bytes(b.Output())


def _tensor(b, name, description, content_type, properties, units, max_, min_, files):
    """TensorMetadata: name 0, description 1, content 3, process_units 4, stats 5, files 6."""
    content = _table(b, 3, (0, "B", content_type), (1, "o", properties))
    stats = _table(b, 2, (0, "o", _vector(b, "f", max_)), (1, "o", _vector(b, "f", min_)))
    return _table(b, 7, (0, "o", b.CreateString(name)),
                  (1, "o", b.CreateString(description) if description else None),
                  (3, "o", content), (4, "o", _vector(b, "o", units) if units else None),
                  (5, "o", stats), (6, "o", _vector(b, "o", files) if files else None))


def _table(b, num_fields, *fields):
    """Ends a table of `num_fields` fields given as (slot, kind, value); None is left out."""
    b.StartObject(num_fields)
    for slot, kind, value in fields:
        if value is not None:
            getattr(b, {"o": "PrependUOffsetTRelativeSlot", "b": "PrependInt8Slot",
                        "B": "PrependUint8Slot", "I": "PrependUint32Slot"}[kind])(slot, value, 0)
    return b.EndObject()


def _vector(b, kind, values):
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependUOffsetTRelative(value) if kind == "o" else b.PrependFloat32(value)
    return b.EndVector()


def _append_zip(model, files):
    """`model` and an uncompressed zip of `files` after it, as zipfile's "a" mode appends."""
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_STORED, 0o644 << 16
            archive.writestr(info, data)
    return out.getvalue()


def read_metadata(model_content_or_path):
    """The ModelCard fields, min_parser_version and labels_file of a .tflite (bytes or path);
    ValueError when it has no TFLite Metadata."""
    content = _model_bytes(model_content_or_path)
    model = _schema.Model.GetRootAs(content, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    entry = next((m for m in entries if m.Name() == METADATA_NAME.encode()), None)
    _require(entry is not None, f"The model has no TFLite Metadata (no {METADATA_NAME!r} "
             "entry): add it with export.tflite_metadata.add_metadata.")
    data = model.Buffers(entry.Buffer()).DataAsNumpy()
    data = data.tobytes() if hasattr(data, "tobytes") else b""
    _require(len(data) > 8 and util.BufferHasIdentifier(data, 0, METADATA_IDENTIFIER),
             f"The {METADATA_NAME} buffer is not a ModelMetadata flatbuffer (identifier "
             f"{data[4:8]!r}, expected {METADATA_IDENTIFIER!r}).")
    root = Table(data, encode.Get(packer.uoffset, data, 0))
    subgraph = (_get(root, 3, "T") or [None])[0]
    image, scores = [(_get(subgraph, slot, "T") or [None])[0] for slot in (2, 3)]
    kind = _get(image, 3, "t")  # Content: the ContentProperties union
    props = _get(kind, 1, "t") if _get(kind, 0, "B") == _IMAGE_PROPERTIES else None
    norm = next((_get(u, 1, "t") for u in _get(image, 4, "T")
                 if _get(u, 0, "B") == _NORMALIZATION_OPTIONS), None)
    stats, size = _get(image, 5, "t"), _get(props, 1, "t")
    files = [_get(f, 0, "s") for f in _get(scores, 6, "T")
             if _get(f, 2, "b") == _TENSOR_AXIS_LABELS]
    text = _packed_file(content, files[0]).decode("utf-8") if files else ""
    return {
        "name": _get(root, 0, "s"), "description": _get(root, 1, "s"),
        "version": _get(root, 2, "s"), "author": _get(root, 4, "s"),
        "license": _get(root, 5, "s"), "min_parser_version": _get(root, 7, "s"),
        "color_space": {v: k for k, v in COLOR_SPACES.items()}.get(_get(props, 0, "b")),
        "height": _get(size, 1, "I"), "width": _get(size, 0, "I"),
        "mean": _get(norm, 0, "f"), "std": _get(norm, 1, "f"),
        "input_min": (_get(stats, 1, "f") or (None,))[0],
        "input_max": (_get(stats, 0, "f") or (None,))[0],
        "output_description": _get(scores, 1, "s"), "labels_file": files[0] if files else None,
        "labels": tuple(text.removesuffix("\n").split("\n")) if text else (),  # as MediaPipe
    }


def _packed_file(content, name):
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return archive.read(name)
    except (zipfile.BadZipFile, KeyError):
        raise ValueError(f"The metadata names {name!r}, a file the model does not pack.") from None


def _get(table, slot, kind):
    """Field `slot` of a flatbuffer table (None: absent, read as empty): kind s(tring), t(able),
    T (vector of tables), f (vector of floats) or a struct format of a scalar."""
    at = table.Offset(4 + 2 * slot) if table is not None else 0
    if not at:
        return {"s": "", "t": None, "T": [], "f": ()}.get(kind, 0)
    if kind == "s":
        return table.String(table.Pos + at).decode("utf-8")
    if kind == "t":
        return Table(table.Bytes, table.Indirect(table.Pos + at))
    if kind not in ("T", "f"):
        return struct.unpack_from("<" + kind, table.Bytes, table.Pos + at)[0]
    start, n = table.Vector(at), table.VectorLen(at)
    if kind == "f":
        return tuple(struct.unpack_from(f"<{n}f", table.Bytes, start))
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(n)]


def _model_bytes(model_content_or_path):
    """The bytes of a .tflite (bytes or path); ValueError if they are not a TFLite model."""
    value = model_content_or_path
    if isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as f:
            value = f.read()
    _require(isinstance(value, (bytes, bytearray, memoryview)),
             f"Expected .tflite bytes or a path; received {type(value).__name__}.")
    content = bytes(value)
    _require(len(content) > 8 and _schema.Model.ModelBufferHasIdentifier(content, 0),
             "Not a TFLite model: the flatbuffer file identifier 'TFL3' is missing.")
    return content
