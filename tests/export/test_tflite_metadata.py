"""TFLite Metadata (export.tflite_metadata) on a tiny classifier of red / green / blue images
trained here, checked against independent readers: the LiteRT interpreter, TensorFlow's model
schema, zipfile, MediaPipe's generated metadata schema and MediaPipe Tasks' ImageClassifier
(export.mediapipe_runtime; those tests skip without mediapipe)."""

import ast
import dataclasses
import io
import json
import math
import os
import sys
import types
import warnings
import zipfile

import numpy as np
import pytest

from export import mediapipe_runtime, tflite_metadata
from export.tflite_metadata import ModelCard, add_metadata, read_metadata

LABELS = ("red", "green", "blue")
SIZE = 32
CARD = ModelCard(name="rgb-tiny", description="Which colour dominates the image.",
                 version="1.0", author="keras-resnet tests", license="Apache-2.0", labels=LABELS)
MIN_AGREEMENT = {"float32": 0.99, "uint8": 0.99, "int8": 0.98, "int8_uint8_io": 0.98}
NO_MEDIAPIPE = mediapipe_runtime.available()
needs_mediapipe = pytest.mark.skipif(NO_MEDIAPIPE is not None, reason=NO_MEDIAPIPE or "")


def frames(n, seed, size=SIZE):
    """(uint8 RGB frames (n, size, size, 3), labels): class k has channel k brighter on average;
    every frame holds a 0 and a 255 pixel, so int8 calibration spans 0..255."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.uniform(0, 150, (n, size, size, 3))
    x[np.arange(n), :, :, labels] += rng.uniform(15, 100, (n, 1, 1))
    x[:, 0, 0, :], x[:, 0, 1, :] = 0, 255
    return np.clip(np.round(x), 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def variants():
    """{name: .tflite bytes without metadata} of one trained model: float32 (raw float pixels
    in), uint8 (a cast to float first), int8 (full integer, float I/O), int8_uint8_io and
    int8_int8_io (full integer, integer I/O)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    images, labels = frames(512, seed=0)
    model.fit(images.astype(np.float32), labels, batch_size=32, epochs=2, verbose=0)
    raw = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    uint8_model = keras.Model(raw, model(keras.ops.cast(raw, "float32")))

    def convert(source, io_type=None, int8=False):
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [images[i:i + 1].astype(np.float32)] for i in range(100))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type is not None:
            converter.inference_input_type = converter.inference_output_type = io_type
        with warnings.catch_warnings():  # "Statistics for quantized inputs were expected"
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()

    return {"float32": convert(model), "uint8": convert(uint8_model),
            "int8": convert(model, int8=True),
            "int8_uint8_io": convert(model, io_type=tf.uint8, int8=True),
            "int8_int8_io": convert(model, io_type=tf.int8, int8=True)}


@pytest.fixture(scope="module")
def with_metadata(variants):
    return {name: add_metadata(content, CARD) for name, content in variants.items()}


@pytest.fixture(scope="module")
def held_out():
    return frames(200, seed=1)


def litert(content, images):
    """Probabilities (N, classes) by the LiteRT interpreter, one frame at a time, quantizing
    inputs and dequantizing outputs with the model's own parameters."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    rows = []
    for frame in images.astype(np.float32):
        x = np.round(frame / in_scale + in_zero) if in_scale else frame
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype(np.float32)
        rows.append((y - out_zero) * out_scale if out_scale else y)
    return np.stack(rows)


def tflite_model(content):
    """The model as TensorFlow's own TFLite schema reads it (object API)."""
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))


def expected_fields(card, height=SIZE, width=SIZE):
    """What read_metadata should return for `card` on a SIZE x SIZE model, from the card alone."""
    fields = dataclasses.asdict(card)
    fields.update(height=height, width=width,
                  mean=tuple(float(np.float32(v)) for v in card.mean),
                  std=tuple(float(np.float32(v)) for v in card.std))
    return fields


# ------------------------------------------------------------------------- (a) read back


@pytest.mark.parametrize("variant", list(MIN_AGREEMENT))
def test_read_metadata_returns_what_was_written(with_metadata, variant, tmp_path):
    content = with_metadata[variant]
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    for source in (content, str(path), path):
        read = read_metadata(source)
        assert {k: read[k] for k in expected_fields(CARD)} == expected_fields(CARD)
        assert read["labels_file"] == "labels.txt"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:  # packed as MetadataPopulator does
        assert archive.namelist() == ["labels.txt"]
        assert archive.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
        assert archive.read("labels.txt").decode() == "".join(f"{x}\n" for x in LABELS)


def test_read_metadata_of_a_model_without_metadata(variants):
    with pytest.raises(ValueError, match="no TFLite Metadata"):
        read_metadata(variants["float32"])


@needs_mediapipe
@pytest.mark.parametrize("variant", ["float32", "int8_uint8_io"])
def test_mediapipe_schema_parses_the_metadata(with_metadata, variant):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as model_schema

    content = with_metadata[variant]
    model = model_schema.Model.GetRootAsModel(content, 0)
    (entry,) = [model.Metadata(i) for i in range(model.MetadataLength())
                if model.Metadata(i).Name() == b"TFLITE_METADATA"]
    buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert md.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    read = read_metadata(content)
    assert [meta.name, meta.description, meta.version, meta.author, meta.license] == [
        s.encode() for s in (CARD.name, CARD.description, CARD.version, CARD.author,
                             CARD.license)]
    assert meta.minParserVersion.decode() == read["min_parser_version"]
    (subgraph,) = meta.subgraphMetadata
    (image,), (scores,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    assert image.name == b"image" and scores.name == b"probability"
    props = image.content.contentProperties
    assert image.content.contentPropertiesType == md.ContentProperties.ImageProperties
    assert props.colorSpace == md.ColorSpaceType.RGB
    assert (props.defaultSize.height, props.defaultSize.width) == (SIZE, SIZE)
    (unit,) = image.processUnits
    assert unit.optionsType == md.ProcessUnitOptions.NormalizationOptions
    assert tuple(unit.options.mean) == read["mean"] and tuple(unit.options.std) == read["std"]
    assert (image.stats.min[0], image.stats.max[0]) == (CARD.input_min, CARD.input_max)
    assert scores.description.decode() == CARD.output_description
    assert scores.content.contentPropertiesType == md.ContentProperties.FeatureProperties
    assert (scores.stats.min[0], scores.stats.max[0]) == (0.0, 1.0)
    (labels,) = scores.associatedFiles
    assert labels.name == b"labels.txt"
    assert labels.type == md.AssociatedFileType.TENSOR_AXIS_LABELS
    # GetMinimumMetadataParserVersion (metadata_version.cc) gives 1.0.0 unless a later member
    # is present: subgraph process units / tensor groups / custom metadata, file versions,
    # VOCABULARY or SCANN_INDEX_FILE files, tokenizer options, audio content.
    later = (subgraph.inputProcessUnits, subgraph.outputProcessUnits, subgraph.inputTensorGroups,
             subgraph.outputTensorGroups, subgraph.customMetadata, labels.version)
    assert all(x is None for x in later)
    assert labels.type not in (md.AssociatedFileType.VOCABULARY,
                               md.AssociatedFileType.SCANN_INDEX_FILE)
    assert meta.minParserVersion == b"1.0.0"


@needs_mediapipe
def test_mediapipe_metadata_displayer_reads_the_file(with_metadata, monkeypatch):
    """MediaPipe's MetadataDisplayer: JSON by the flatbuffers C++ parser of the official
    metadata_schema.fbs (in libmediapipe), and the packed files by name."""
    for name in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata",
                 "mediapipe.tasks.cc.metadata.python",
                 "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))  # missing from the wheel
    try:
        from mediapipe.tasks.python.metadata.metadata import MetadataDisplayer
    except ImportError as e:
        pytest.skip(f"MediaPipe's metadata tools do not import here: {e}")
    displayer = MetadataDisplayer.with_model_buffer(with_metadata["int8_uint8_io"])
    assert displayer.get_packed_associated_file_list() == ["labels.txt"]
    assert displayer.get_associated_file_buffer("labels.txt").decode().split() == list(LABELS)
    meta = json.loads(displayer.get_metadata_json())
    assert {k: meta[k] for k in ("name", "description", "version", "author", "license")} == {
        k: getattr(CARD, k) for k in ("name", "description", "version", "author", "license")}
    assert meta["min_parser_version"] == "1.0.0"
    (subgraph,) = meta["subgraph_metadata"]
    (image,), (scores,) = subgraph["input_tensor_metadata"], subgraph["output_tensor_metadata"]
    assert image["content"] == {"content_properties_type": "ImageProperties",
                                "content_properties": {"color_space": "RGB", "default_size": {
                                    "width": SIZE, "height": SIZE}}}
    assert image["process_units"] == [{"options_type": "NormalizationOptions",
                                       "options": {"mean": list(CARD.mean),
                                                   "std": list(CARD.std)}}]
    assert image["stats"] == {"max": [CARD.input_max], "min": [CARD.input_min]}
    assert scores["name"] == "probability" and scores["stats"] == {"max": [1.0], "min": [0.0]}
    assert scores["content"]["content_properties_type"] == "FeatureProperties"
    assert [(f["name"], f["type"]) for f in scores["associated_files"]] == [
        ("labels.txt", "TENSOR_AXIS_LABELS")]


# ------------------------------------------------------------------ (b) outputs unchanged


@pytest.mark.parametrize("variant", list(MIN_AGREEMENT))
def test_interpreter_outputs_are_bitwise_unchanged(variants, with_metadata, variant, held_out):
    images, _ = held_out
    before, after = litert(variants[variant], images), litert(with_metadata[variant], images)
    assert before.tobytes() == after.tobytes()
    assert len(set(before.argmax(-1))) == 3  # a model whose predictions mean something
    old, new = tflite_model(variants[variant]), tflite_model(with_metadata[variant])
    assert sorted(m.name for m in new.metadata) == sorted(
        [m.name for m in old.metadata] + [b"TFLITE_METADATA"])  # the converter's entries stay
    assert len(new.buffers) == len(old.buffers) + 1


# ------------------------------------------------------------------------- (c) MediaPipe


@needs_mediapipe
@pytest.mark.parametrize("variant", list(MIN_AGREEMENT))
def test_mediapipe_classifies_like_litert(with_metadata, variant, held_out, tmp_path):
    images, labels = held_out
    path = tmp_path / f"{variant}.tflite"
    path.write_bytes(with_metadata[variant])
    with mediapipe_runtime.ImageClassifierRunner(path) as runner:
        top1, names, scores = runner.classify(images)
    reference = litert(with_metadata[variant], images)
    assert names == [LABELS[i] for i in top1]
    assert set(names) == set(LABELS)
    agreement = float(np.mean(top1 == reference.argmax(-1)))
    assert agreement >= MIN_AGREEMENT[variant], agreement
    assert np.mean(reference.argmax(-1) == labels) >= 0.9
    assert scores.shape == reference.shape
    assert np.abs(scores - reference).max() <= 1e-5  # MediaPipe fed the model the same input


@needs_mediapipe
def test_mediapipe_resizes_frames_to_the_input_size(with_metadata, held_out, tmp_path):
    images, _ = held_out
    path = tmp_path / "float32.tflite"
    path.write_bytes(with_metadata["float32"])
    large = images.repeat(2, axis=1).repeat(2, axis=2)  # 64 x 64, each pixel a 2 x 2 block
    with mediapipe_runtime.ImageClassifierRunner(path) as runner:
        top1, _, _ = runner.classify(large[:50])
    assert np.mean(top1 == litert(with_metadata["float32"], images[:50]).argmax(-1)) >= 0.98


# ------------------------------------------------------- (d) what MediaPipe needs, documented


@needs_mediapipe
def test_mediapipe_refuses_a_float_model_without_metadata(variants, tmp_path):
    path = tmp_path / "float32.tflite"
    path.write_bytes(variants["float32"])
    with pytest.raises(ValueError, match="requires specifying NormalizationOptions metadata"):
        mediapipe_runtime.ImageClassifierRunner(path)


@needs_mediapipe
def test_mediapipe_names_no_category_of_a_uint8_model_without_metadata(variants, held_out,
                                                                        tmp_path):
    path = tmp_path / "uint8.tflite"
    path.write_bytes(variants["uint8"])
    with mediapipe_runtime.ImageClassifierRunner(path) as runner:
        top1, names, _ = runner.classify(held_out[0][:10])
    assert not any(names)  # None in MediaPipe 1.2.2: labels come only from metadata
    assert np.array_equal(top1, litert(variants["uint8"], held_out[0][:10]).argmax(-1))


@needs_mediapipe
def test_mediapipe_refuses_per_channel_normalization(variants, tmp_path):
    card = dataclasses.replace(CARD, mean=(0.0, 0.0, 0.0), std=(1.0, 2.0, 1.0))
    path = tmp_path / "model.tflite"
    path.write_bytes(add_metadata(variants["float32"], card))
    assert read_metadata(path)["std"] == (1.0, 2.0, 1.0)  # valid TFLite Metadata all the same
    with pytest.raises(ValueError, match="Per-channel image normalization is not available"):
        mediapipe_runtime.ImageClassifierRunner(path)


@needs_mediapipe
def test_mediapipe_refuses_int8_inputs(variants, tmp_path):
    path = tmp_path / "int8_int8_io.tflite"
    path.write_bytes(add_metadata(variants["int8_int8_io"], CARD))  # valid metadata
    with pytest.raises(ValueError, match="Requested one of these types: uint8/float32"):
        mediapipe_runtime.ImageClassifierRunner(path)


@needs_mediapipe
def test_mediapipe_refuses_grayscale(tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    gray = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    card = dataclasses.replace(CARD, color_space="GRAYSCALE")
    content = add_metadata(tf.lite.TFLiteConverter.from_keras_model(gray).convert(), card)
    assert read_metadata(content)["color_space"] == "GRAYSCALE"
    path = tmp_path / "gray.tflite"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="Only RGB color space"):
        mediapipe_runtime.ImageClassifierRunner(path)


def test_available_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if it were not installed
    reason = mediapipe_runtime.available()
    assert "pip install mediapipe==1.2.2" in reason and "\n" not in reason


def test_tflite_metadata_does_not_import_mediapipe():
    tree = ast.parse(open(tflite_metadata.__file__).read())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m and m.split(".")[0] in ("mediapipe", "tflite_support")]


# ------------------------------------------------------------------------ (e) bad inputs


@pytest.mark.parametrize("changes, message", [
    (dict(labels=()), "non-empty sequence"),
    (dict(labels="red green blue"), "non-empty sequence"),
    (dict(labels=("red", "gr\neen", "blue")), "one-line strings"),
    (dict(labels=("red", "", "blue")), "one-line strings"),
    (dict(name=""), "name not empty"),
    (dict(mean=(0.0, 0.0)), "1 or 3 values"),
    (dict(mean=(0.0, 0.0, 0.0), std=(1.0,)), "as many"),
    (dict(std=(0.0,)), "std must be positive"),
    (dict(mean=(math.nan,)), "finite numbers"),
    (dict(std=("one",)), "finite numbers"),
    (dict(color_space="BGR"), "color_space must be one of"),
    (dict(input_min=255.0, input_max=0.0), "below input_max"),
    (dict(height=0), "positive ints"),
])
def test_a_bad_model_card(changes, message):
    fields = {f.name: getattr(CARD, f.name) for f in dataclasses.fields(CARD)}
    with pytest.raises(ValueError, match=message):
        ModelCard(**{**fields, **changes})


@pytest.mark.parametrize("variant, changes, message", [
    ("float32", dict(labels=("red", "green")), "3 outputs but the card 2 labels"),
    ("float32", dict(height=64, width=64), "differs from the model's input 32 x 32"),
    ("float32", dict(color_space="GRAYSCALE"), r"needs an input of shape \(1, H, W, 1\)"),
    ("uint8", dict(mean=(127.5,), std=(127.5,)), "needs mean 0, std 1"),
    ("int8_uint8_io", dict(mean=(127.5,), std=(127.5,)), "needs mean 0, std 1"),
])
def test_a_card_that_does_not_fit_the_model(variants, variant, changes, message):
    with pytest.raises(ValueError, match=message):
        add_metadata(variants[variant], dataclasses.replace(CARD, **changes))


@pytest.mark.parametrize("content", [b"", b"not a tflite model at all", 42])
def test_bytes_that_are_no_model(content):
    with pytest.raises(ValueError):
        add_metadata(content, CARD)
    with pytest.raises(ValueError):
        read_metadata(content)


# ----------------------------------------------------------------------- (f) idempotence


def test_add_metadata_twice_keeps_one_entry_and_one_labels_file(variants, with_metadata,
                                                                 held_out):
    once = with_metadata["float32"]
    assert add_metadata(once, CARD) == once  # same card: the same bytes
    renamed = dataclasses.replace(CARD, description="Second pass.", labels=("r", "g", "b"))
    twice = add_metadata(once, renamed)
    model = tflite_model(twice)
    assert [m.name for m in model.metadata].count(b"TFLITE_METADATA") == 1
    assert len(model.buffers) == len(tflite_model(once).buffers)
    with zipfile.ZipFile(io.BytesIO(twice)) as archive:
        assert archive.namelist() == ["labels.txt"]
        assert archive.read("labels.txt") == b"r\ng\nb\n"
    assert read_metadata(twice) == {**read_metadata(once), "description": "Second pass.",
                                    "labels": ("r", "g", "b")}
    images = held_out[0][:20]
    assert litert(twice, images).tobytes() == litert(variants["float32"], images).tobytes()


def test_a_written_file_loads_from_disk(with_metadata, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(tmp_path, "model.tflite")
    with open(path, "wb") as f:
        f.write(with_metadata["int8"])
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, SIZE, SIZE, 3)
