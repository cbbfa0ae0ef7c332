"""Working copies of large photos (train.copies): made once, upright, at the working size, with
the pixels PIL gives for the same resize; broken ones skipped and named; read by every loader."""

import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from train import copies, data, folders


def _photo(rng, h, w):
    """A photo-like image: smooth gradients plus mild noise (JPEG sizes like a camera's)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / w, y * 200 / h, (x + y) * 100 / (h + w)], -1)
    return (base + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("photos")
    for c in ("cats", "dogs"):
        (root / c).mkdir()
        Image.fromarray(_photo(rng, 300, 400)).save(root / c / "small.jpg", quality=90)
        Image.fromarray(_photo(rng, 1100, 1400)).save(root / c / "big.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones store portrait photos
    Image.fromarray(_photo(rng, 2100, 2800)).save(root / "cats/phone.jpg", quality=92, exif=exif)
    damaged = root / "dogs/damaged.png"
    Image.fromarray(_photo(rng, 1100, 1400)).save(damaged)
    raw = bytearray(damaged.read_bytes())
    raw[200:260] = b"x" * 60  # inside IDAT: zlib data and CRC no longer match; ends intact
    damaged.write_bytes(bytes(raw))
    cache = tmp_path_factory.mktemp("cache")
    return root, cache, folders.scan(str(root), cache_dir=str(cache), holdout=0.5)


def _images(tree):
    return {im.path: im for split in tree.splits.values() for im in split}


def test_large_photos_are_read_from_upright_copies_at_the_working_size(tree):
    root, cache, scanned = tree
    images = _images(scanned)
    phone = images["cats/phone.jpg"]
    assert (phone.height, phone.width) == (683, 512)  # upright: portrait, shorter side 512
    assert phone.orientation == 1 and phone.read.startswith(str(cache))
    assert os.path.isfile(phone.read) and os.path.isfile(images["cats/big.png"].read)
    assert (images["cats/big.png"].height, images["cats/big.png"].width) == (512, 652)
    small = images["cats/small.jpg"]
    assert small.read == os.path.join(str(root), "cats/small.jpg")
    assert (small.height, small.width) == (300, 400)


def test_copies_hold_the_pixels_of_pils_resize_of_the_upright_photo(tree):
    root, _, scanned = tree
    for rel in ("cats/phone.jpg", "cats/big.png"):
        im = _images(scanned)[rel]
        with Image.open(root / rel) as original:
            reference = ImageOps.exif_transpose(original).convert("RGB").resize(
                (im.width, im.height), Image.BILINEAR)  # PIL's reducing filter: antialiased
        copy = np.asarray(Image.open(im.read), np.float32)
        diff = np.abs(copy - np.asarray(reference, np.float32))
        # Measured: mean 0.88 (phone JPEG) and 1.46 (PNG) grey levels: the copy's JPEG quality
        # 95 and the phone photo's 1/2 DCT decode;
        # the same copy turned 180 degrees is 78 away. 3.0 leaves room for other JPEG libraries.
        assert copy.shape == (im.height, im.width, 3)
        assert diff.mean() < 3.0, (rel, diff.mean())


def test_a_photo_broken_inside_is_skipped_and_named(tree):
    _, _, scanned = tree
    assert [s.path for s in scanned.skipped] == ["dogs/damaged.png"]
    assert "does not decode" in scanned.skipped[0].reason
    assert "dogs/damaged.png" not in _images(scanned)


def test_a_second_scan_reads_no_file_and_makes_no_copy(tree):
    root, cache, scanned = tree
    made = {p: os.path.getmtime(p) for p in (im.read for im in _images(scanned).values())}
    again = folders.scan(str(root), cache_dir=str(cache), holdout=0.49)  # not the memo
    assert again.checked == 0 and again.cached == len(made) + 1
    assert {p: os.path.getmtime(p) for p in made} == made
    os.remove(_images(scanned)["cats/phone.jpg"].read)  # a lost copy is made again
    third = folders.scan(str(root), cache_dir=str(cache), holdout=0.48)
    assert third.checked == 1 and os.path.isfile(_images(third)["cats/phone.jpg"].read)


def test_load_gives_the_copies_pixels(tree, monkeypatch):
    root, cache, scanned = tree
    monkeypatch.setattr(folders, "cache_root", lambda cache_dir=None: str(cache))
    ds, info = data.load(f"folder:{root}", "all")
    got = {tuple(x.shape) for x, _ in ds.as_numpy_iterator()}
    assert got == {(300, 400, 3), (512, 652, 3), (683, 512, 3)}
    assert info.num_examples == len(_images(scanned))


def test_working_size():
    assert copies.working_size(3024, 4032) == (512, 683)
    assert copies.working_size(4032, 3024) == (683, 512)
    assert copies.working_size(1100, 1100) == (512, 512)
