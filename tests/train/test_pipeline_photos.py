"""Training batches of a photo folder (issue 21): a per-image augmentation runs on the decoded
full-size photo, EXIF-oriented, seeded by its stream position (epochs differ, reruns and a
resumed iterator repeat), and the file list is shuffled before anything is decoded."""

import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from train import augment, data, image_files, pipeline, views

SIZE = 64  # the training view: small, so the test is fast
CLASSES = 6  # one photo a class: a label names its photo


@pytest.fixture(autouse=True)
def keras_cache(tmp_path, monkeypatch):
    """Manifests go to this test's own Keras cache dir, not ~/.keras."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def photo(rng, h, w):
    """A phone-like picture: smooth colour gradients plus texture, uint8 (h, w, 3)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(9 * x * y)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """root/{train,test}/c<k>/p.jpg: JPEGs of 320x240 and 240x320, one stored sideways with
    EXIF orientation 6 (upright 240x320)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for k in range(CLASSES):
        h, w = (240, 320) if k % 2 else (320, 240)
        for split in ("train", "test"):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            exif = Image.Exif()
            if k == 3:
                exif[0x0112] = 6  # rotate 90 degrees clockwise to view
            Image.fromarray(photo(rng, h, w)).save(folder / "p.jpg", quality=92, exif=exif)
    return root


def training(root, seed=0, batch_size=CLASSES, augment_name="random_resized_crop"):
    ds, info = data.load(f"folder:{root}", "train")
    view = views.for_dataset(info, SIZE, augment_name)
    examples = pipeline.prepare(ds, info, view, augment_name)
    return pipeline.train_batches(examples, batch_size=batch_size, augment=augment_name,
                                  seed=seed), info, examples


def by_label(batches):
    """[(images of one epoch ordered by label)]: batch == one epoch of the 6 photos."""
    out = []
    for x, y in batches:
        y = y.numpy()
        assert sorted(y) == list(range(CLASSES))  # each batch is one epoch's permutation
        out.append(x.numpy()[np.argsort(y)])
    return out


def test_random_resized_crop_runs_on_the_full_size_photo_and_repeats(photos):
    ds, info, examples = training(photos)
    assert not examples.in_memory  # per-image augmentations always stream
    epochs = by_label(ds.take(3))
    assert epochs[0].shape == (CLASSES, SIZE, SIZE, 3)
    for a, b in zip(epochs, epochs[1:]):  # every photo cropped anew each epoch
        assert all(not np.array_equal(a[k], b[k]) for k in range(CLASSES))
    plain = sorted((int(y), views.apply(x, examples.view).numpy()) for x, y in examples.dataset)
    for epoch in epochs:  # not the evaluation view's centre crop
        assert all(not np.array_equal(epoch[k], plain[k][1]) for k in range(CLASSES))
    # Independent reference: the crop of the whole photo as `train.image_files.decode` reads it
    # (EXIF applied), with the seed of its stream position k.
    images = {im.label: im for im in data.folder_images(info)}  # one a class
    x, y = next(iter(ds))
    for k, label in enumerate(y.numpy()):
        full = image_files.decode(images[label].read)
        assert full.shape[:2] == ((320, 240) if label % 2 == 0 or label == 3 else (240, 320))
        key = tf.random.experimental.stateless_fold_in(  # seed 0, position k (int64)
            tf.constant([0, 2], tf.int64), tf.constant(k, tf.int64))
        want = augment.random_resized_crop(full, key, size=(SIZE, SIZE))
        np.testing.assert_array_equal(x[k].numpy(), want.numpy())
    again = by_label(training(photos)[0].take(3))  # same seed: the same batches
    for a, b in zip(epochs, again):
        np.testing.assert_array_equal(a, b)
    other = by_label(training(photos, seed=1)[0].take(1))
    assert not np.array_equal(other[0], epochs[0])


def test_a_restored_iterator_continues_identically(photos, tmp_path):
    straight = iter(training(photos, batch_size=4)[0])
    for _ in range(2):
        next(straight)
    path = tf.train.Checkpoint(iterator=straight).save(str(tmp_path / "ckpt"))
    expected = [next(straight) for _ in range(4)]  # crosses epoch boundaries (6 photos)

    resumed = iter(training(photos, batch_size=4)[0])
    next(resumed)  # moved, to show that restore replaces its state
    tf.train.Checkpoint(iterator=resumed).restore(path).assert_consumed()
    for (xe, ye), (xr, yr) in zip(expected, (next(resumed) for _ in range(4))):
        np.testing.assert_array_equal(xe.numpy(), xr.numpy())
        np.testing.assert_array_equal(ye.numpy(), yr.numpy())


def test_files_are_shuffled_before_decoding(tmp_path, monkeypatch):
    """The first batch decodes about its own images, not a shuffle buffer's worth: with
    shuffle_buffer far above the split, decoding after the shuffle would read all 240
    training images before the first batch (as the pipeline did before)."""
    root = tmp_path / "many"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(150):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / c / f"{i:03d}.png")
    decoded = []
    real = image_files.tf_decode

    def counting(contents, channels=3):
        contents = tf.py_function(lambda c: (decoded.append(1), c)[1], [contents], tf.string)
        contents.set_shape([])
        return real(contents, channels)

    # every folder reader decodes through image_files.read_upright, which calls this
    monkeypatch.setattr(image_files, "tf_decode", counting)
    ds, info = data.load(f"folder:{root}", "train")
    assert info.num_examples == 240  # 80% of 300: the rest held out
    view = views.for_dataset(info, 8, "random_resized_crop")
    batches = pipeline.train_batches(pipeline.prepare(ds, info, view, "random_resized_crop"),
                                     batch_size=2, augment="random_resized_crop",
                                     shuffle_buffer=10_000)
    next(iter(batches))
    time.sleep(1.0)  # let prefetching and the parallel maps run ahead as far as they go
    # Read ahead: 2 prefetched batches and the maps' parallel calls (at most one per core,
    # 16 on the largest machine here): well under half the split.
    assert 2 <= len(decoded) < 120, len(decoded)


def test_region_is_the_part_of_the_photo_the_centre_crop_view_keeps():
    """`views.region` (the region of interest a phone runtime is given) against the view's own
    resize: the pixels inside the region, resized to the view, are what `views.resize` gives."""
    from train import views

    rng = np.random.default_rng(3)
    view = views.View(32, 32, 3, "center_crop")  # shorter side to 37, centre 32x32
    for h, w in ((60, 80), (90, 45), (37, 37)):
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        top, left, bottom, right = views.region(h, w, view)
        scale = view.resize_shorter / min(h, w)
        resized = tf.image.resize(tf.cast(image, tf.float32),
                                  (max(round(h * scale), 32), max(round(w * scale), 32)),
                                  antialias=True)
        n_h, n_w = resized.shape[:2]
        crop = resized[round(top * n_h):round(bottom * n_h), round(left * n_w):round(right * n_w)]
        assert crop.shape[:2] == (32, 32), (h, w)
        expected = views.resize(image, view).numpy()
        assert np.abs(np.clip(np.round(crop.numpy()), 0, 255) - expected).max() == 0, (h, w)
    assert views.region(60, 80, views.View(32, 32, 3)) == (0.0, 0.0, 1.0, 1.0)  # stretch
