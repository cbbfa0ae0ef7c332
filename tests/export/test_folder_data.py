"""A user's own class-per-folder photos through `python -m train` and `python -m export`:
RGB and grayscale trees, images of one size and of mixed sizes. Export sees exactly what
training saw: its Keras accuracy on the test split is training's test accuracy, and every
written file passes verification (LiteRT, its metadata, MediaPipe, the SavedModel)."""

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


_photo = stripes.photo


def make_tree(root, mode="RGB", sizes=((32, 32),), per_class=(40, 12), seed=0):
    """root/{train,test}/<class>/<n>.png; `sizes` are drawn per image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = sizes[rng.integers(len(sizes))]
                Image.fromarray(_photo(kind, rng, h, w)).convert(mode).save(folder / f"{i}.png")
    return root


def _run(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)
    return proc


def _train_and_export(tmp_path, root, train_flags=(), export_flags=()):
    run = tmp_path / "run"
    trained = _run("-m", "train", "--recipe=smoke", f"--dataset=folder:{root}",
                   f"--run_dir={run}", "--verbose=0", *train_flags)
    assert trained.returncode == 0, trained.stderr[-3000:]
    exported = _run("-m", "export", f"--run_dir={run}", f"--out={run / 'export'}",
                    *export_flags)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["all_images"] and report["eval_images"] == summary["test_images"]
    assert report["keras_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert all(row["passed"] for row in report["formats"]), report["formats"]
    from export import mediapipe_runtime

    if mediapipe_runtime.available() is None:  # installed: every phone file ran in MediaPipe
        assert [r["format"] for r in report["formats"] if r.get("mediapipe") != "ran"] == \
            [r["format"] for r in report["formats"] if not r["file"].endswith(".tflite")], \
            report["formats"]  # SavedModel and ONNX are server files: no MediaPipe
    for log in (run / "native.log", run / "export" / "native.log"):  # native lines kept there
        assert log.read_text().startswith("# keras-resnet native log: pid ")
    assert "oneDNN custom operations" not in trained.stderr + exported.stderr  # not on the tty
    return summary, report


def test_rgb_photos_of_one_size_train_and_export_with_default_export_flags(tmp_path):
    root = make_tree(tmp_path / "photos")
    summary, report = _train_and_export(tmp_path, root, ["--steps=40"])
    assert summary["view"]["height"] == 32 and summary["view"]["pad"] == 0  # their own size
    assert summary["test_accuracy"] > 0.5  # 3 classes: chance is 1/3
    assert [r["format"] for r in report["formats"]] == [
        "saved_model", "float32", "float16", "dynamic", "int8", "int8_io", "onnx"]
    assert report["class_names"] == list(CLASSES)


def test_grayscale_photos(tmp_path):
    root = make_tree(tmp_path / "gray", mode="L", seed=1)
    summary, report = _train_and_export(tmp_path, root, ["--steps=30", "--model=resnet8"],
                                        ["--formats=saved_model,float32,int8"])
    assert summary["view"]["channels"] == 3  # decoded as RGB, as phones deliver frames
    assert summary["test_accuracy"] > 0.45


def test_photos_of_mixed_sizes_need_and_take_an_image_size(tmp_path):
    root = make_tree(tmp_path / "mixed", sizes=((28, 36), (40, 40), (33, 25)), seed=2)
    refused = _run("-m", "train", "--recipe=smoke", f"--dataset=folder:{root}",
                   f"--run_dir={tmp_path / 'refused'}", "--steps=2")
    assert refused.returncode == 2
    assert "--image_size" in refused.stderr and "3 sizes" in refused.stderr
    assert not (tmp_path / "refused" / "recipe.json").exists()
    summary, _ = _train_and_export(tmp_path, root,
                                   ["--steps=30", "--model=resnet8", "--image_size=32"],
                                   ["--formats=saved_model,float32"])
    assert summary["view"]["height"] == 32


@pytest.mark.slow
def test_rgb_photos_with_every_flag_at_its_default(tmp_path):
    root = make_tree(tmp_path / "photos", per_class=(60, 20), seed=3)
    summary, _ = _train_and_export(tmp_path, root)
    assert summary["steps"] == 400 and summary["test_accuracy"] > 0.8


def test_predict_reads_photos_upright_and_webp_like_pil(tmp_path):
    """`python -m export.predict` sees a phone photo as the phone shows it: EXIF orientation
    applied, compared with PIL's `ImageOps.exif_transpose`."""
    from PIL import Image, ImageOps

    from export import predict

    rng = np.random.default_rng(4)
    image = _photo("checks", rng, 30, 44)
    image[:8, :10] = (255, 0, 0)  # an asymmetric mark: a wrong rotation cannot match
    def decoders_differ(path):  # mean |predict's pixels - PIL's upright pixels|
        with Image.open(path) as f:
            reference = np.asarray(ImageOps.exif_transpose(f).convert("RGB")).astype(int)
        read = predict.read_image(str(path), 3)
        assert read.shape == reference.shape
        return np.abs(read - reference).mean(), read.shape

    Image.fromarray(image).save(tmp_path / "1.jpg", quality=95)
    floor, _ = decoders_differ(tmp_path / "1.jpg")  # TF's and PIL's IDCTs differ (~1-3 levels)
    for k in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = k
        Image.fromarray(image).save(tmp_path / f"{k}.jpg", exif=exif, quality=95)
        # the same stored pixels, moved: the same differences, unless a rotation is wrong
        differ, shape = decoders_differ(tmp_path / f"{k}.jpg")
        assert differ == pytest.approx(floor, abs=1e-9) and floor < 5, (k, differ, floor)
        assert shape == ((44, 30, 3) if k != 3 else (30, 44, 3))
    Image.fromarray(image).save(tmp_path / "web.webp", lossless=True)
    np.testing.assert_array_equal(predict.read_image(str(tmp_path / "web.webp"), 3), image)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "3.jpg").read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.jpg is not a usable image: does not decode"):
        predict.read_image(str(tmp_path / "cut.jpg"), 3)


@pytest.mark.slow  # about 190 s on 2 busy cores: train and export in subprocesses
def test_a_mac_zip_of_class_folders_with_a_broken_photo_trains_and_exports(tmp_path):
    """root/<class>/* (no split folders) from a Mac zip with a truncated JPEG: 3 classes, a
    held-out test split made and listed, the broken file left out and counted; export reads
    the same held-out split."""
    root = make_tree(tmp_path / "zip", per_class=(40, 0), seed=5)
    for kind in CLASSES:
        (root / "train" / kind).rename(root / kind)
    shutil.rmtree(root / "train"), shutil.rmtree(root / "test")
    (root / "__MACOSX" / "checks").mkdir(parents=True)
    (root / "__MACOSX" / "checks" / "._0.png").write_bytes(b"\0\5\26\7Mac OS X")
    (root / "vertical" / "._1.png").write_bytes(b"\0\5\26\7Mac OS X")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    from PIL import Image

    Image.open(root / "checks" / "0.png").convert("RGB").save(root / "checks" / "x.jpg")
    whole = (root / "checks" / "x.jpg").read_bytes()
    (root / "checks" / "x.jpg").write_bytes(whole[:len(whole) // 2])
    summary, report = _train_and_export(tmp_path, root, ["--steps=30", "--model=resnet8"],
                                        ["--formats=saved_model,float32"])
    assert report["class_names"] == list(CLASSES)
    run = tmp_path / "run"
    held_out = (run / "held_out.txt").read_text().split()
    assert len(held_out) == 3 * 8 and summary["test_images"] == 24  # 20% of 40 per class
    folder = json.loads((run / "folder.json").read_text())
    assert [s["path"] for s in folder["skipped"]] == ["checks/x.jpg"]
    assert folder["ignored_files"] == 3 and folder["split_made"] is True
