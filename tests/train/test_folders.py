"""A photo folder as users have it (issue 22), each fault in its own tree built here from real
images (Fashion-MNIST's test images from Debian's IDX files, and drawn phone-like photos):
junk beside the data, broken images, no split folders, odd modes, EXIF rotation, WebP/TIFF,
and the manifest that spares a second scan."""

import gzip
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from train import data, folders, image_files, pipeline

SOURCE = data.FASHION_MNIST_SOURCE
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SOURCE, "t10k-images-idx3-ubyte.gz")),
    reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(autouse=True)
def keras_cache(tmp_path, monkeypatch):
    """Manifests and PNG copies go to this test's own Keras cache dir, not ~/.keras."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def fashion(per_class, offset=0):
    """{label: [uint8 (28, 28) image, ...]} from Fashion-MNIST's t10k IDX files."""
    with gzip.open(os.path.join(SOURCE, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(SOURCE, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return {k: list(images[labels == k][offset:offset + per_class]) for k in range(10)}


def write_tree(root, splits=(("train", 12), ("test", 4)), ext="png", classes=10):
    """root/<split>/<k>/<i>.<ext> ('' split: root/<k>/<i>.<ext>); returns the paths written."""
    written, offset = [], 0
    for split, n in splits:
        for k, images in list(fashion(n, offset).items())[:classes]:
            folder = root / split / f"class{k}" if split else root / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                path = folder / f"{i:03d}.{ext}"
                Image.fromarray(image).save(path)
                written.append(path)
        offset += n
    return written


DECODER_FLOOR = 2.0
"""Mean |TF - PIL| of one JPEG decoded by each (IDCT and chroma upsampling differ): measured at
most 1.05 levels (max 6) over 40 drawn photos; a wrong orientation of such a photo gives 43+."""


def read_all(ds):
    return [(x, int(y)) for x, y in ds.as_numpy_iterator()]


def test_macos_zip_and_other_junk_are_ignored_and_counted(tmp_path):
    root = tmp_path / "photos"
    write_tree(root)
    junk = ["__MACOSX/train/class0/._000.png", "__MACOSX/._train", "train/class1/._003.png",
            ".DS_Store", "train/.DS_Store", "train/class2/Thumbs.db", "test/desktop.ini",
            "train/class3/.ipynb_checkpoints/000-checkpoint.png", ".hidden/class0/0.png",
            "README.txt", "train/empty/.DS_Store"]
    for rel in junk:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    ds, info = data.load(f"folder:{root}", "train")
    assert info.num_classes == 10 and info.class_names == tuple(f"class{k}" for k in range(10))
    assert info.num_examples == 120 and (info.num_train, info.num_test) == (120, 40)
    assert sorted(left.path for left in info.folder.ignored) == sorted(junk)
    assert info.folder.skipped == () and not info.folder.split_made
    assert len(read_all(ds)) == 120
    text = data.describe(f"folder:{root}")
    assert "10 classes, 160 images" in text and "ignored: 11 files" in text
    assert "skipped: 0" in text and "split: the tree's own (train, test)" in text


def test_broken_images_are_found_before_the_first_step_and_listed(tmp_path):
    root = tmp_path / "photos"
    paths = write_tree(root, splits=(("train", 14), ("test", 3)), ext="jpg")
    whole = paths[5].read_bytes()
    paths[5].write_bytes(whole[:len(whole) // 2])  # truncated mid-scan
    paths[20].write_bytes(b"")  # zero bytes
    (root / "train/class4/notes.jpg").write_text("a text file with a photo's name")
    (root / "train/class5/photo.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    Image.fromarray(fashion(1)[6][0]).save(root / "train/class6/really_a.png.jpg", "PNG")
    expected = {paths[5]: "does not decode", paths[20]: "empty file",
                root / "train/class4/notes.jpg": "not an image"}
    bad = {str(p.relative_to(root)): why for p, why in expected.items()}

    with pytest.raises(ValueError) as raised:
        data.load(f"folder:{root}", "train", bad_images="fail")
    assert all(p in str(raised.value) for p in bad), raised.value

    ds, info = data.load(f"folder:{root}", "train")
    skipped = {s.path: s.reason for s in info.folder.skipped}
    assert skipped.keys() == bad.keys()
    assert all(why in skipped[p] for p, why in bad.items()), skipped
    assert info.num_examples == 140 - 2 + 1  # a PNG named .jpg still decodes
    assert [left.path for left in info.folder.ignored] == ["train/class5/photo.heic"]
    # the training stream reads every remaining image without an error, through the pipeline
    assert len(read_all(ds)) == info.num_examples
    # damage inside the data of a file whose ends are intact: the check passes it (it reads
    # headers and ends), and the stream drops it with a warning instead of stopping
    damaged = root / "train/class7/damaged.png"
    Image.fromarray(fashion(1)[7][0]).save(damaged)
    raw = bytearray(damaged.read_bytes())
    raw[60:100] = b"x" * 40  # inside IDAT: zlib data and CRC no longer match
    damaged.write_bytes(bytes(raw))
    more, more_info = data.load(f"folder:{root}", "train")
    assert more_info.num_examples == info.num_examples + 1
    assert len(read_all(more)) == info.num_examples
    batches = pipeline.batches(ds, info, training=True, batch_size=32, shuffle_buffer=200)
    for x, _ in batches.take(6):  # more than one epoch
        assert x.shape == (32, 28, 28, 3)
    entries = data.record(info, str(tmp_path / "run"))
    assert entries["skipped_images"] == 3 and entries["split_made"] is False
    written = json.loads((tmp_path / "run" / "folder.json").read_text())
    assert {s["path"] for s in written["skipped"]} == bad.keys()
    assert not (tmp_path / "run" / "held_out.txt").exists()


@pytest.mark.parametrize("layout", ["root/<class>", "root/train/<class>"])
def test_a_tree_without_a_test_split_gets_a_stratified_deterministic_one(tmp_path, layout):
    root = tmp_path / "photos"
    split = "" if layout == "root/<class>" else "train"
    write_tree(root, splits=((split, 21),), classes=4)
    (root / (split or ".") / "class1" / "020.png").unlink()  # 20 images in class1, 21 elsewhere
    train, info = data.load(f"folder:{root}", "train")
    test, test_info = data.load(f"folder:{root}", "test")
    assert info.folder.split_made and info.folder.holdout == folders.DEFAULT_HOLDOUT
    per_class = np.bincount([y for _, y in read_all(test)], minlength=4)
    assert per_class.tolist() == [4, 4, 4, 4]  # round(0.2 * 21) = round(0.2 * 20) = 4
    assert (info.num_examples, test_info.num_examples) == (83 - 16, 16)
    train_paths = {im.path for im in info.folder.splits["train"]}
    test_paths = {im.path for im in info.folder.splits["test"]}
    assert not train_paths & test_paths and test_paths == set(info.folder.held_out)
    # the held-out files: per class the first in SHA-256 order of "class/file name"
    for k in range(4):
        names = sorted((p.name for p in (root / (split or ".") / f"class{k}").iterdir()),
                       key=lambda n: folders.order_key(f"class{k}", n))
        held = {p.rsplit("/", 1)[1] for p in test_paths if f"class{k}/" in p}
        assert held == set(names[:4])
    again = folders.scan(str(root))
    assert again.held_out == info.folder.held_out  # deterministic
    half, half_info = data.load(f"folder:{root}", "train[:50%]")  # TFDS slicing on top
    assert half_info.num_examples == round(info.num_examples / 2) == len(read_all(half))
    every, every_info = data.load(f"folder:{root}", "all")  # a folder of new photos, judged
    assert every_info.num_examples == 83 and len(read_all(every)) == 83
    assert {im.path for im in data.folder_images(every_info)} == train_paths | test_paths
    data.record(test_info, str(tmp_path / "run"))
    listed = (tmp_path / "run" / "held_out.txt").read_text().split()
    assert sorted(listed) == sorted(test_paths)
    other = folders.scan(str(root), holdout=0.5)
    assert len(other.splits["test"]) == 2 * 10 + 2 * 11 - 2  # round-half-even of 10.5 is 10
    text = data.describe(f"folder:{root}")
    assert "split made" in text and "16 images" in text
    assert "warning: class 'class1' has only 4 images in split 'test'" in text


@pytest.mark.parametrize("mode,ext", [("RGBA", "png"), ("P", "gif"), ("I;16", "png"),
                                      ("CMYK", "jpg"), ("LA", "png"), ("RGB", "webp"),
                                      ("RGB", "tiff"), ("I;16", "tiff")])
def test_image_modes_and_formats_decode_to_rgb_like_pil(tmp_path, mode, ext):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for k in range(2):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(5):
            rgb = np.clip(rng.normal(128, 50, (24, 31, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(rgb)
            if mode == "I;16":
                im = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
            elif mode != "RGB":
                im = im.convert(mode)
            lossless = {"webp": {"lossless": True}}.get(ext, {})
            im.save(root / f"c{k}" / f"{i}.{ext}", **lossless)
    ds, info = data.load(f"folder:{root}", "train")
    assert info.folder.skipped == () and info.image_shape == (24, 31, 3)
    for (x, _), im in zip(read_all(ds), info.folder.splits["train"]):
        reference = image_files.pil_read(os.path.join(root, im.path))
        if ext == "jpg":  # TF's and PIL's JPEG decoders: DECODER_FLOOR
            assert np.abs(x.astype(int) - reference).mean() < DECODER_FLOOR
        else:
            np.testing.assert_array_equal(x, reference)
    if mode == "I;16":  # 16-bit samples scaled to 8 bits: the reference is the 8-bit source
        assert x[..., 0].max() > 200


def phone_photo(h, w, rng):
    """An asymmetric drawn 'photo' (gradient, a bright corner block, noise) at phone aspect."""
    y, x = np.mgrid[:h, :w]
    image = np.stack([255 * x / w, 255 * y / h, 128 + 0 * x], -1)
    image[: h // 4, : w // 5] = (250, 30, 30)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def test_exif_orientation_matches_pil_exif_transpose(tmp_path):
    root = tmp_path / "phone"
    rng = np.random.default_rng(1)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    for k in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = k
        Image.fromarray(phone_photo(48, 64, rng)).save(root / "a" / f"{k}.jpg", exif=exif,
                                                      quality=92)
        Image.fromarray(phone_photo(48, 64, rng)).save(root / "b" / f"{k}.jpg", quality=92)
    tree = folders.scan(str(root), holdout=0.5)
    for split in ("train", "test"):
        ds, info = data.load(f"folder:{root}", split, holdout=0.5)
        for (x, _), im in zip(read_all(ds), tree.splits[split]):
            with Image.open(os.path.join(root, im.path)) as f:
                reference = np.asarray(ImageOps.exif_transpose(f).convert("RGB"))
            assert x.shape == reference.shape == (im.height, im.width, 3), im.path
            assert np.abs(x.astype(int) - reference).mean() < DECODER_FLOOR, im.path
            decoded = image_files.decode(os.path.join(root, im.path)).numpy()  # predict's reader
            np.testing.assert_array_equal(decoded, x)
    upright = {im.path: (im.height, im.width) for v in tree.splits.values() for im in v}
    assert {p: hw for p, hw in upright.items() if p.startswith("a/")} == {
        f"a/{k}.jpg": (64, 48) if k >= 5 else (48, 64) for k in range(1, 9)}


def test_the_manifest_makes_a_second_scan_read_no_image(tmp_path, keras_cache):
    root = tmp_path / "photos"
    paths = write_tree(root, splits=(("train", 5), ("test", 2)), ext="jpg")
    first = folders.scan(str(root))
    assert (first.checked, first.cached) == (70, 0)
    assert os.path.commonpath([folders.manifest_path(str(root)), str(keras_cache)]) == str(
        keras_cache)  # kept in the Keras cache dir, not in the user's tree
    assert sorted(os.listdir(root)) == ["test", "train"]
    assert folders.scan(str(root)) is first  # in one process: the walk matches, no reading
    folders._LAST.clear()  # as a new process starts
    second = folders.scan(str(root))
    assert (second.checked, second.cached) == (0, 70)
    assert second.splits == first.splits
    paths[3].write_bytes(paths[3].read_bytes()[:200])  # changed: size and mtime differ
    third = folders.scan(str(root))
    assert (third.checked, third.cached) == (1, 69)
    assert [s.path for s in third.skipped] == [str(paths[3].relative_to(root))]


def test_a_class_named_train_among_class_folders_stays_a_class(tmp_path):
    root = tmp_path / "vehicles"  # ROOT/<class>/*: 'train' holds images, not class folders
    for k, name in enumerate(("bus", "train", "tram")):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(fashion(5)[k]):
            Image.fromarray(image).save(root / name / f"{i}.png")
    tree = folders.scan(str(root))
    assert tree.class_names == ("bus", "train", "tram") and tree.split_made
    assert [len(tree.splits[s]) for s in ("train", "test")] == [12, 3] and tree.ignored == ()
