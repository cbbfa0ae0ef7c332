"""Tests of train.data against independent references (the raw IDX files, numpy crops)."""

import collections
import gzip
import hashlib
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from train import data

SOURCE = data.FASHION_MNIST_SOURCE
needs_debian_files = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SOURCE, "t10k-labels-idx1-ubyte.gz")),
    reason="apt-get install dataset-fashion-mnist",
)


def read_idx(name):
    """Independent IDX parser: uint8 images (N, 28, 28) or labels (N,)."""
    with gzip.open(os.path.join(SOURCE, name)) as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def as_numpy(ds, batch=2000):
    images, labels = zip(*ds.batch(batch).as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def multiset(images, labels):
    return collections.Counter(
        (hashlib.sha1(x.tobytes()).hexdigest(), int(y)) for x, y in zip(images, labels)
    )


# ------------------------------------------------------------------------ Fashion-MNIST


@needs_debian_files
@pytest.mark.parametrize("split,prefix,count", [("train", "train", 60000), ("test", "t10k", 10000)])
def test_fashion_mnist_matches_idx_files(fashion_dir, split, prefix, count):
    ds, info = data.load("fashion_mnist", split, data_dir=fashion_dir)
    images, labels = as_numpy(ds)
    assert images.shape == (count, 32, 32, 1) and images.dtype == np.uint8
    assert info.image_shape == (32, 32, 1) and info.num_classes == 10
    assert (info.num_train, info.num_test, info.num_examples) == (60000, 10000, count)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    # The published counts: 6,000 / 1,000 per class.
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [count // 10] * 10)
    # 2-pixel zero border; the inside is exactly the IDX content (as a multiset of pairs).
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    ref_images = read_idx(f"{prefix}-images-idx3-ubyte.gz")
    ref_labels = read_idx(f"{prefix}-labels-idx1-ubyte.gz")
    assert multiset(images[:, 2:30, 2:30, 0], labels) == multiset(ref_images, ref_labels)


@needs_debian_files
def test_mean_image_and_cache(fashion_dir):
    start = time.perf_counter()
    _, info = data.load("fashion_mnist", "test[:10]", data_dir=fashion_dir)
    assert time.perf_counter() - start < 3  # cached .npy, prepared data
    ref = np.zeros((32, 32), np.float64)
    ref[2:30, 2:30] = read_idx("train-images-idx3-ubyte.gz").mean(axis=0)
    assert info.mean.shape == (32, 32, 1) and info.mean.dtype == np.float32
    np.testing.assert_allclose(info.mean[..., 0], ref, atol=1e-3)
    assert info.num_examples == 10


@needs_debian_files
def test_prepare_is_idempotent(fashion_dir):
    start = time.perf_counter()
    assert data.prepare_fashion_mnist(fashion_dir) == fashion_dir
    assert time.perf_counter() - start < 2
    assert not [p for p in os.listdir(fashion_dir) if "prepare" in p]  # temp dir removed


def test_missing_debian_files_say_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.prepare_fashion_mnist(str(tmp_path / "tfds"), source_dir=str(tmp_path))


# -------------------------------------------------------------------- missing datasets


@pytest.mark.parametrize(
    "name,files",
    [("cifar10", ["cifar-10-binary.tar.gz"]),
     ("imagenet2012", ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"])],
)
def test_missing_dataset_fails_fast_naming_files_and_place(tmp_path, name, files):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        data.load(name, "train", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5
    message = str(error.value)
    for f in files:
        assert f in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert os.listdir(tmp_path) == []  # no half-made folders left behind


def test_manual_file_goes_through_tfds_checksums(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"not the real file")
    start = time.perf_counter()
    with pytest.raises(Exception, match="checksum"):
        data.load("cifar10", "train", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 10


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*fashion_mnist.*folder:"):
        data.load("mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        data.load("cifar10", "train[:10", data_dir=str(tmp_path))
    ds = tf.data.Dataset.from_tensors((tf.zeros([8, 8, 1], tf.uint8), tf.constant(0, tf.int64)))
    info = data.DatasetInfo("x", 2, (8, 8, 1), 1, 1, ("a", "b"))
    with pytest.raises(ValueError, match="augment 'autoaugment'"):
        data.pipeline(ds, info, training=True, batch_size=1, augment="autoaugment")


@needs_debian_files
def test_unknown_split_lists_available(fashion_dir):
    with pytest.raises(ValueError, match="validation.*'test', 'train'"):
        data.load("fashion_mnist", "validation", data_dir=fashion_dir)


# ------------------------------------------------------------------------ augmentation


def windows(padded, h, w):
    """All (h, w) windows of a padded image and their mirror images, as numpy."""
    for top in range(padded.shape[0] - h + 1):
        for left in range(padded.shape[1] - w + 1):
            crop = padded[top : top + h, left : left + w]
            yield (top, left, False), crop
            yield (top, left, True), crop[:, ::-1]


@pytest.mark.parametrize("channels", [1, 3])
def test_cifar_augment_is_a_padded_crop_or_its_flip(channels):
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, size=(32, 32, channels), dtype=np.uint8)  # no zeros inside
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    seen = set()
    for i in range(24):
        out = data.cifar_augment(tf.constant(image), tf.constant([7, i], tf.int64)).numpy()
        assert out.shape == image.shape and out.dtype == np.uint8
        matches = [key for key, crop in windows(padded, 32, 32) if np.array_equal(crop, out)]
        assert len(matches) == 1, "output is not a window of the zero-padded image"
        seen.add(matches[0])
    flips = {flip for _, _, flip in seen}
    assert flips == {False, True}, "flip never (or always) happens"
    assert len({(t, l) for t, l, _ in seen}) > 8, "crop offsets hardly vary"
    again = data.cifar_augment(tf.constant(image), tf.constant([7, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(
        again, data.cifar_augment(tf.constant(image), tf.constant([7, 3], tf.int64)).numpy()
    )


def gradient_image(h, w):
    """Horizontal ramp 0..255 (float) in 3 channels: the resize scale shows in its slope."""
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    return np.repeat(np.broadcast_to(ramp, (h, w))[..., None], 3, axis=-1).copy()


def test_imagenet_augment_scale_crop_flip():
    h, w = 300, 400
    image = gradient_image(h, w)
    shorters, flips = [], set()
    for i in range(10):
        out = data.imagenet_augment(tf.constant(image), tf.constant([1, i], tf.int64)).numpy()
        assert out.shape == (224, 224, 3) and out.dtype == np.float32
        assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3
        slope = np.median(np.diff(out[112, :, 0]))
        flips.add(bool(slope < 0))
        # ramp slope 255/(w-1) per source pixel, divided by the resize factor s/min(h, w)
        shorters.append(255 / (w - 1) * h / abs(slope))
    assert min(shorters) >= 256 * 0.98 and max(shorters) <= 480 * 1.02
    assert max(shorters) - min(shorters) > 50, "scale hardly varies"
    assert flips == {False, True}


def test_center_crop_ten_crop_multi_scale_shapes_and_content():
    image = tf.constant(gradient_image(300, 400))
    resized = data.resize_shorter_side(image, 256).numpy()
    assert resized.shape == (256, 341, 3)
    center = data.center_crop(image).numpy()
    assert center.shape == (224, 224, 3)
    np.testing.assert_allclose(center, resized[16:240, 58:282])
    crops = data.ten_crop(image).numpy()
    assert crops.shape == (10, 224, 224, 3)
    np.testing.assert_allclose(crops[0], resized[:224, :224])
    np.testing.assert_allclose(crops[3], resized[-224:, -224:])
    np.testing.assert_allclose(crops[4], center)
    np.testing.assert_allclose(crops[5:], crops[:5, :, ::-1])
    views = data.multi_scale(image)
    assert [v.shape[:2] for v in views] == [
        (224, 299), (256, 341), (384, 512), (480, 640), (640, 853)
    ]
    small = data.center_crop(tf.zeros([32, 32, 1], tf.uint8), 28, resize_shorter=None)
    assert small.shape == (28, 28, 1) and small.dtype == tf.float32


# ---------------------------------------------------------------------------- pipeline


def toy_dataset(n=64, size=8, channels=1):
    """Image i is filled with (i mod 251) + 1, label i: order and identity are visible."""
    def make(i):
        value = tf.cast(i % 251 + 1, tf.uint8)
        return tf.fill([size, size, channels], value), i
    return tf.data.Dataset.range(n).map(make)


TOY_INFO = data.DatasetInfo("toy", 64, (8, 8, 1), 64, 0, tuple(map(str, range(64))))


def take(ds, k):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(k)]


@needs_debian_files
def test_training_pipeline_batches(fashion_dir):
    ds, info = data.load("fashion_mnist", "train[:512]", data_dir=fashion_dir)
    batches = take(data.pipeline(ds, info, training=True, batch_size=100, seed=3), 6)
    for x, y in batches:  # 6 batches > 5.12: repeats past the end of the slice
        assert x.shape == (100, 32, 32, 1) and x.dtype == np.float32
        assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
        assert 0 <= x.min() and x.max() <= 255 and x.max() > 100
    test = data.pipeline(ds, info, training=False, batch_size=100)
    x, y = zip(*take(test, 10))
    assert [len(b) for b in y] == [100] * 5 + [12]  # one pass, remainder kept
    images, labels = as_numpy(ds)
    np.testing.assert_array_equal(np.concatenate(x), images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(y), labels)


def test_same_seed_same_batches_other_seed_differs():
    def run(seed):
        return take(data.pipeline(toy_dataset(), TOY_INFO, training=True, batch_size=16,
                                  seed=seed, shuffle_buffer=32), 6)
    a, b, c = run(5), run(5), run(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    # Shuffled: one epoch is a permutation, and not the identity.
    epoch = np.concatenate([y for _, y in a[:4]])
    assert sorted(epoch) == list(range(64)) and list(epoch) != list(range(64))


@needs_debian_files
def test_checkpointed_iterator_resumes_identically(fashion_dir, tmp_path):
    ds, info = data.load("fashion_mnist", "train[:2000]", data_dir=fashion_dir)

    def make():
        return data.pipeline(ds, info, training=True, batch_size=64, seed=1,
                             shuffle_buffer=500)

    straight = iter(make())
    for _ in range(5):
        next(straight)
    path = tf.train.Checkpoint(iterator=straight).save(str(tmp_path / "ckpt"))
    expected = [next(straight) for _ in range(40)]  # crosses an epoch boundary (31.25)

    resumed = iter(make())
    next(resumed)  # a moved iterator, to show that restore really replaces its state
    tf.train.Checkpoint(iterator=resumed).restore(path).assert_consumed()
    for (xe, ye), (xr, yr) in zip(expected, (next(resumed) for _ in range(40))):
        np.testing.assert_array_equal(xe.numpy(), xr.numpy())
        np.testing.assert_array_equal(ye.numpy(), yr.numpy())


@pytest.mark.parametrize("training", [False, True])
def test_input_context_shards_into_disjoint_halves(training):
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        ds = data.pipeline(toy_dataset(), TOY_INFO, training=training, batch_size=16,
                           input_context=context, shuffle_buffer=64)
        batches = take(ds, 4)
        assert all(len(y) == 8 for _, y in batches)  # per-replica batch
        seen.append(set(np.concatenate([y for _, y in batches]).tolist()))
    assert len(seen[0]) == len(seen[1]) == 32
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(64))


def test_variable_size_images_need_image_size():
    info = data.DatasetInfo("var", 2, (None, None, 3), 1, 1, ("a", "b"))
    with pytest.raises(ValueError, match="image_size"):
        data.pipeline(toy_dataset(), info, training=True, batch_size=4, augment="cifar")


# ------------------------------------------------------------------------- ImageFolder


def write_png(path, value, h, w):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = tf.fill([h, w, 3], tf.constant(value, tf.uint8))
    path.write_bytes(tf.io.encode_png(image).numpy())


def test_image_folder_labels_stay_consistent_when_a_split_lacks_a_class(tmp_path):
    classes = ["cat", "dog", "emu"]
    for k, name in enumerate(classes):  # pixel value 10*class + image number + 1
        for i in range(3):
            write_png(tmp_path / "train" / name / f"{i}.png", 10 * k + i + 1, 20 + i, 30)
    for k, name in [(0, "cat"), (2, "emu")]:  # no dog in 'val'
        write_png(tmp_path / "val" / name / "0.png", 10 * k + 5, 24, 18)

    ds, info = data.load(f"folder:{tmp_path}", "train")
    assert info.class_names == tuple(classes) and info.num_classes == 3
    assert (info.num_train, info.num_test, info.image_shape) == (9, 2, (None, None, 3))
    pairs = [(int(x[0, 0, 0]), int(y)) for x, y in ds.as_numpy_iterator()]
    assert sorted(pairs) == sorted((10 * k + i + 1, k) for k in range(3) for i in range(3))

    test, test_info = data.load(f"folder:{tmp_path}", "test")  # 'test' reads 'val'
    assert test_info.num_examples == 2
    assert sorted((int(x[0, 0, 0]), int(y)) for x, y in test.as_numpy_iterator()) == [
        (5, 0), (25, 2)
    ]
    sliced, sliced_info = data.load(f"folder:{tmp_path}", "train[:4]")
    assert sliced_info.num_examples == 4 and len(list(sliced)) == 4

    batches = take(data.pipeline(ds, info, training=True, batch_size=4, image_size=16), 3)
    for x, y in batches:
        assert x.shape == (4, 16, 16, 3)
        # a crop of a constant image is that constant or the zero pad, per image
        for image, label in zip(x, y):
            values = set(np.unique(np.round(image, 3)).tolist()) - {0.0}
            assert len(values) == 1 and (int(values.pop()) - 1) // 10 == label
    evaluation = data.pipeline(test, test_info, training=False, batch_size=2,
                               augment="imagenet", image_size=16)
    (x, _), = take(evaluation, 1)
    assert x.shape == (2, 16, 16, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        data.load(f"folder:{tmp_path / 'nope'}", "train")
    write_png(tmp_path / "train" / "a" / "0.png", 1, 4, 4)
    with pytest.raises(ValueError, match="'test' does not exist"):
        data.load(f"folder:{tmp_path}", "test")
