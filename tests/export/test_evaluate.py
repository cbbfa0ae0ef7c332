"""`export.evaluate` on files made here: a ResNet-8 fitted a few steps on a folder of stripes and
checks, exported once (module fixture) in every format we write. Evaluating a file reproduces
export's own verification on the same images; a folder of other photos (mixed sizes, some gray)
gives what the SavedModel's own signature gives on PIL-decoded files; other classes are
refused with both label lists; the pictures are written."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.export import stripes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = stripes.CLASSES
EVAL_IMAGES = 45  # export verifies on (and evaluate reads) the first 45 test images


def _photo(kind, rng, h, w):
    return stripes.photo(kind, rng, h, w, noise=30)


def _tree(root, classes=CLASSES, per_class=(40, 15), sizes=((32, 32),), gray_every=0, seed=0):
    """root/{train,test}/<class>/<n>.png; every `gray_every`-th image saved as grayscale."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                h, w = sizes[rng.integers(len(sizes))]
                image = Image.fromarray(_photo(CLASSES[c % 3], rng, h, w))
                if gray_every and i % gray_every == 0:
                    image = image.convert("L")
                image.save(root / split / name / f"{i}.png")
    return root


def _resnet8(view, mean, classes):
    """ResNet-8 taking raw pixels (mean subtraction inside), as training builds it."""
    import keras

    import keras_resnet

    inputs = keras.Input(view.shape, name="image")
    x = keras_resnet.ImageNormalization(mean, 1.0, name="mean_subtraction")(inputs)
    return keras_resnet.create("resnet8", weights=None, input_tensor=x, classes=classes)


@pytest.fixture(scope="module")
def folder_export(tmp_path_factory):
    """(folder, run dir, export dir, export report, its rows by format) of a ResNet-8 fitted on a
    stripes folder and exported as SavedModel, float32 and int8 .tflite and ONNX."""
    import keras

    import export
    from train import data, pipeline, recipes, views

    tmp = tmp_path_factory.mktemp("evaluate")
    root = _tree(tmp / "photos")
    keras.utils.set_random_seed(0)
    recipe = recipes.resolve("smoke", model="resnet8", dataset=f"folder:{root}", augment="none")
    ds, info = data.load(recipe.dataset, "train")
    view = views.for_dataset(info, None, "none")
    examples = pipeline.prepare(ds, info, view, "none")
    model = _resnet8(view, data.normalization(info, view, examples.images), info.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  jit_compile=False)  # XLA compiles slower than 20 steps run on this CPU
    model.fit(pipeline.train_batches(examples, batch_size=24, augment="none", seed=0),
              epochs=1, steps_per_epoch=20, verbose=0)
    run = tmp / "run"
    run.mkdir()
    model.save(str(run / "model.keras"))
    (run / "recipe.json").write_text(recipe.to_json())
    (run / "summary.json").write_text(json.dumps({"view": view.to_dict()}))
    formats = ("saved_model", "float32", "int8", "onnx")
    out = tmp / "export"
    report = export.export(str(run), str(out), export.ExportSpec(
        formats=formats, eval_images=EVAL_IMAGES, calibration_images=30, latency_runs=3,
        min_agreement_int8=0.9))  # one image of 45 is 2.2 points
    rows = {row["format"]: row for row in report["formats"]}
    return root, run, out, report, rows


def _files(out, rows):
    return [str(out / row["file"]) for row in rows.values()]


@pytest.fixture(scope="module")
def evaluated(folder_export, tmp_path_factory):
    """evaluate() of every exported file and the .keras model on export's own images."""
    from export.evaluate import evaluate

    root, run, out, _, rows = folder_export
    report_dir = tmp_path_factory.mktemp("report")
    report = evaluate([*_files(out, rows), str(run / "model.keras")], f"folder:{root}",
                      max_images=EVAL_IMAGES, reference=str(run / "model.keras"),
                      out_dir=str(report_dir), threads=(1, 2), latency_runs=3)
    return report_dir, report, {row["format"]: row for row in report["files"]}


def test_evaluate_reproduces_the_exports_own_verification(folder_export, evaluated):
    _, _, _, export_report, rows = folder_export
    _, report, found = evaluated
    assert report["images"] == EVAL_IMAGES == export_report["eval_images"]
    assert export_report["keras_accuracy"] > 0.5  # learnt something: chance is 1/3
    for fmt, row in rows.items():  # the same images, fed by each file's own contract
        mine = found[row["file"]]
        assert mine["accuracy"] == pytest.approx(row["accuracy"], abs=1e-12), fmt
        assert mine["agreement"] == pytest.approx(row["agreement"], abs=1e-12), fmt
        if "mediapipe_accuracy" in row:  # MediaPipe resizes and feeds the same frames
            assert mine["mediapipe_accuracy"] == pytest.approx(row["mediapipe_accuracy"]), fmt
    keras_row = found["model.keras"]
    assert keras_row["accuracy"] == pytest.approx(export_report["keras_accuracy"], abs=1e-12)
    assert keras_row["agreement"] == 1.0  # the reference itself
    for row in report["files"]:
        assert set(row["latency_ms"]) in ({"1", "2"}, {"tf"}) and \
            min(row["latency_ms"].values()) > 0
        assert "top5_accuracy" not in row  # 3 classes


def test_per_class_table_and_pictures(evaluated):
    report_dir, report, found = evaluated
    assert json.loads((report_dir / "report.json").read_text())["files"][0]["format"] == \
        report["files"][0]["format"]
    for name, row in found.items():
        assert [r["class"] for r in row["per_class"]] == list(CLASSES)
        assert sum(r["support"] for r in row["per_class"]) == EVAL_IMAGES
        for picture in ("confusion.png", "mistakes.png"):
            data = (report_dir / name / picture).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, (name, picture)


def _pil_images(root, split="test"):
    """(uint8 images as PIL decodes them, labels by sorted class folder) of root/split."""
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(sorted(os.listdir(root / split))):
        for file in sorted(os.listdir(root / split / name)):
            images.append(np.asarray(Image.open(root / split / name / file).convert("RGB")))
            labels.append(label)
    return images, np.array(labels)


def test_a_folder_of_other_photos_of_mixed_sizes(folder_export, tmp_path):
    """Another run's photos (other seed, three sizes, every 3rd gray): each file resizes them by
    its own contract; the SavedModel's accuracy is its signature's on PIL-decoded files."""
    import tensorflow as tf

    from export.evaluate import evaluate

    _, _, out, _, rows = folder_export
    other = _tree(tmp_path / "field", per_class=(2, 12), sizes=((24, 24), (40, 48), (32, 32)),
                  gray_every=3, seed=7)
    report = evaluate(_files(out, rows), f"folder:{other}", reference=str(out / "saved_model"),
                      threads=(1,), latency_runs=2)
    found = {row["format"]: row for row in report["files"]}
    images, labels = _pil_images(other)
    assert report["images"] == len(labels) == 36
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    predicted = np.array([int(serve(images=tf.constant(im[None]))["class_ids"][0])
                          for im in images])
    assert found["saved_model"]["accuracy"] == pytest.approx(np.mean(predicted == labels))
    # float files agree with the SavedModel (its view inside) on what they were fed (the same
    # resize); int8 within its quantization (measured here: 1.0)
    for fmt in ("float32", "onnx"):
        assert found[rows[fmt]["file"]]["agreement"] == 1.0, fmt
    assert found[rows["int8"]["file"]]["agreement"] >= 0.9
    for fmt in ("float32", "int8"):  # MediaPipe on the frames as decoded, resizing them itself
        row = found[rows[fmt]["file"]]
        if row.get("mediapipe") != "ran":
            continue  # not installed (the 'mobile' extra): the row says why
        assert row["mediapipe_frames"] == "24x24, 32x32, 48x40" and row["mediapipe_names_ok"]
        # Measured 0.972 for both (one image of 36): MediaPipe's own resize of the 24x24 and
        # 48x40 frames differs from the antialiased one LiteRT was fed.
        assert row["mediapipe_agreement"] >= 0.9, (fmt, row["mediapipe_agreement"])
    alone = tmp_path / "alone"  # the files alone, without the export's folder around them
    alone.mkdir()
    for fmt in ("float32", "onnx"):
        shutil.copy(out / rows[fmt]["file"], alone / rows[fmt]["file"])
    again = evaluate([str(alone / rows[fmt]["file"]) for fmt in ("float32", "onnx")],
                     f"folder:{other}", threads=(1,), latency_runs=2)
    for row in again["files"]:
        assert row["accuracy"] == found[row["format"]]["accuracy"], row["format"]


@pytest.mark.slow
def test_a_tflite_file_with_the_models_own_input(folder_export, tmp_path):
    """--noframes: the file takes float32 model inputs; evaluate applies the view of the
    metadata.json beside it, and without it says so."""
    import export
    from export.evaluate import evaluate

    root, run, _, _, _ = folder_export
    out = tmp_path / "noframes"
    report = export.export(str(run), str(out), export.ExportSpec(
        formats=("float32",), frames=False, eval_images=EVAL_IMAGES, latency_runs=2))
    (row,) = evaluate(str(out / "model_float32.tflite"), f"folder:{root}",
                      max_images=EVAL_IMAGES, threads=(1,), latency_runs=2)["files"]
    assert row["accuracy"] == pytest.approx(report["formats"][0]["accuracy"], abs=1e-12)
    assert row["input_dtype"] == "float32 32x32x3"
    os.remove(out / "metadata.json")
    with pytest.raises(ValueError, match="keep the metadata.json written beside it"):
        evaluate(str(out / "model_float32.tflite"), f"folder:{root}", max_images=5)


def test_a_dataset_of_other_classes_is_refused_with_both_label_lists(folder_export, tmp_path):
    from export.evaluate import evaluate

    _, run, out, _, rows = folder_export
    other = _tree(tmp_path / "animals", classes=("birds", "cats", "dogs"), per_class=(1, 2))
    keras_file = str(run / "model.keras")
    with pytest.raises(ValueError, match="holds no class names .* pass --labels=FILE"):
        evaluate(keras_file, f"folder:{other}")  # not the run's dataset, no labels.txt
    for path in (*_files(out, rows), keras_file):
        with pytest.raises(ValueError) as caught:
            evaluate(path, f"folder:{other}", labels=CLASSES if path == keras_file else None)
        message = str(caught.value)
        assert "other classes" in message, path
        assert str(list(CLASSES)) in message and "['birds', 'cats', 'dogs']" in message, path


def test_cli_prints_the_table_quietly(folder_export, tmp_path):
    root, _, out, _, rows = folder_export
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, "-m", "export.evaluate", str(out / rows["int8"]["file"]),
         str(out / rows["onnx"]["file"]), f"--dataset=folder:{root}", "--max_images=10",
         f"--out={tmp_path / 'eval'}", "--latency_runs=2"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ms 1 thr" in proc.stdout and "model.onnx (ONNX Runtime): top-1" in proc.stdout
    assert (tmp_path / "eval" / "model.onnx" / "confusion.png").is_file()
    assert "oneDNN" not in proc.stderr and "XNNPACK" not in proc.stderr, proc.stderr


def test_a_path_that_is_no_model(folder_export, tmp_path):
    from export.evaluate import runners

    root, _, out, _, _ = folder_export
    with pytest.raises(ValueError, match="nothing.tflite does not exist"):
        runners.open_file(out / "nothing.tflite")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a file evaluate knows"):
        runners.open_file(tmp_path / "notes.txt")


def test_every_format_of_the_fashion_export_reproduces_its_verification(exported, run_dir,
                                                                        fashion_dir, keras_model,
                                                                        held_out):
    """The shared Fashion-MNIST export (tests/export/conftest.py, every format): each file's
    accuracy on export's 1000 held-out images is export's own; top-5 (10 classes) is Keras'
    top-5 counted here; the run directory is judged as its Keras model."""
    from export.evaluate import evaluate
    from tests.export.conftest import EVAL_IMAGES as FASHION_IMAGES

    out, rows, export_report = exported
    report = evaluate([os.path.join(out, row["file"]) for row in rows.values()] + [run_dir],
                      "fashion_mnist", data_dir=fashion_dir, max_images=FASHION_IMAGES,
                      reference=run_dir, threads=(1,), latency_runs=2, mediapipe="off")
    found = {row["format"]: row for row in report["files"]}
    for fmt, row in rows.items():
        mine = found[row["file"]]
        assert mine["accuracy"] == pytest.approx(row["accuracy"], abs=1e-12), fmt
        if "reference" not in row:  # QAT and pruning compare with their own fine-tuned twin
            assert mine["agreement"] == pytest.approx(row["agreement"], abs=1e-12), fmt
    keras_row = found[os.path.basename(run_dir)]
    assert keras_row["accuracy"] == pytest.approx(export_report["keras_accuracy"], abs=1e-12)
    probabilities = keras_model.predict(held_out.eval_inputs, verbose=0)
    top5 = np.argsort(-probabilities, -1)[:, :5]
    expected = np.mean([label in best for label, best in zip(held_out.eval_labels, top5)])
    assert keras_row["top5_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert keras_row["top5_accuracy"] > keras_row["accuracy"]
