"""Tests of train.data, train.views, train.augment and train.pipeline against independent
references (the raw IDX files, numpy crops, PIL-written images)."""

import collections
import gzip
import hashlib
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from train import augment, data, image_files, pipeline, views

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
    assert images.shape == (count, 28, 28, 1) and images.dtype == np.uint8
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10 and info.pad == 2
    assert (info.num_train, info.num_test, info.num_examples) == (60000, 10000, count)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    # The published counts: 6,000 / 1,000 per class.
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [count // 10] * 10)
    # Exactly the IDX content (as a multiset of pairs); the default view pads 2 zero pixels.
    ref_images = read_idx(f"{prefix}-images-idx3-ubyte.gz")
    ref_labels = read_idx(f"{prefix}-labels-idx1-ubyte.gz")
    assert multiset(images[..., 0], labels) == multiset(ref_images, ref_labels)
    view = views.for_dataset(info)
    assert view.shape == (32, 32, 1) and view.pad == 2
    padded = views.apply(images[:8], view).numpy()
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not padded[:, border].any()
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images[:8].astype(np.float32))


@needs_debian_files
def test_per_pixel_mean_of_the_training_split(fashion_dir):
    ds, info = data.load("fashion_mnist", "train", data_dir=fashion_dir)
    view = views.for_dataset(info)
    examples = pipeline.prepare(ds, info, view)
    assert examples.in_memory and examples.images.shape == (60000, 28, 28, 1)
    mean = data.normalization(info, view, examples.images)
    ref = np.zeros((32, 32), np.float64)
    ref[2:30, 2:30] = read_idx("train-images-idx3-ubyte.gz").mean(axis=0)
    assert mean.shape == (32, 32, 1) and mean.dtype == np.float32
    # float64 sums both ways; the float32 cast leaves < 1 ulp of values <= 255 (1.5e-5).
    np.testing.assert_allclose(mean[..., 0], ref, atol=3e-5, rtol=0)


@needs_debian_files
def test_prepare_is_idempotent(fashion_dir):
    start = time.perf_counter()
    assert data.prepare_fashion_mnist(fashion_dir) == fashion_dir
    assert time.perf_counter() - start < 2
    assert not [p for p in os.listdir(fashion_dir) if "prepare" in p]  # temp dir removed


def test_a_half_made_variant_folder_is_prepared_again(tmp_path, capsys):
    """A prepare killed before TFDS wrote dataset_info.json leaves fashion_mnist/3.0.1 behind;
    TFDS would 'reuse' it and every split would be empty. Also: a quiet first run prints one
    line, not TFDS's banner and warnings."""
    (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)
    ds, info = data.load("fashion_mnist", "test[:10]", data_dir=str(tmp_path))
    assert info.num_examples == 10 and len(list(ds)) == 10
    assert "Downloading and preparing" not in capsys.readouterr().out


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
    info = data.DatasetInfo("x", 2, (8, 8, 1), 1, 1, ("a", "b"), num_examples=1)
    with pytest.raises(ValueError, match="augment 'autoaugment'"):
        pipeline.batches(ds, info, training=True, batch_size=1, augment="autoaugment")
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.batches(ds, info, training=True, batch_size=0)


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
    images = rng.integers(1, 256, size=(24, 32, 32, channels), dtype=np.uint8)  # no zeros
    out = augment.cifar_batch(tf.constant(images), tf.constant([7, 3], tf.int64)).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    seen = set()
    for image, result in zip(images, out):  # each image gets its own crop and flip
        padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
        matches = [key for key, crop in windows(padded, 32, 32) if np.array_equal(crop, result)]
        assert len(matches) == 1, "output is not a window of the zero-padded image"
        seen.add(matches[0])
    assert {flip for _, _, flip in seen} == {False, True}, "flip never (or always) happens"
    assert len({(t, l) for t, l, _ in seen}) > 8, "crop offsets hardly vary"
    again = augment.cifar_batch(tf.constant(images), tf.constant([7, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(again, out)


def test_random_erasing_zeroes_one_rectangle_with_the_given_probability():
    images = tf.fill([400, 16, 16, 1], 9.0)
    out = augment.erase_batch(images, tf.constant([1, 2], tf.int64), 0.5).numpy()
    erased = (out == 0).any(axis=(1, 2, 3))
    assert 0.4 < erased.mean() < 0.6
    for image in out[erased]:
        rows, cols = np.nonzero(image[..., 0] == 0)
        box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert not box.any(), "the erased pixels form one rectangle"
    assert (out[~erased] == 9).all()


def gradient_image(h, w):
    """Horizontal ramp 0..255 (float) in 3 channels: the resize scale shows in its slope."""
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    return np.repeat(np.broadcast_to(ramp, (h, w))[..., None], 3, axis=-1).copy()


def test_imagenet_augment_scale_crop_flip():
    h, w = 300, 400
    image = gradient_image(h, w)
    shorters, flips = [], set()
    for i in range(10):
        out = augment.imagenet_image(tf.constant(image), tf.constant([1, i], tf.int64)).numpy()
        assert out.shape == (224, 224, 3) and out.dtype == np.float32
        assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3
        slope = np.median(np.diff(out[112, :, 0]))
        flips.add(bool(slope < 0))
        # ramp slope 255/(w-1) per source pixel, divided by the resize factor s/min(h, w)
        shorters.append(255 / (w - 1) * h / abs(slope))
    assert min(shorters) >= 256 * 0.98 and max(shorters) <= 480 * 1.02
    assert max(shorters) - min(shorters) > 50, "scale hardly varies"
    assert flips == {False, True}


def test_center_crop_view_ten_crop_multi_scale_shapes_and_content():
    image = tf.constant(gradient_image(300, 400))
    resized = views.resize_shorter_side(image, 256).numpy()
    assert resized.shape == (256, 341, 3)
    view = views.View(224, 224, 3, "center_crop")
    assert view.resize_shorter == 256  # 224 * 256 / 224
    center = views.apply(tf.cast(image, tf.uint8), view).numpy()
    assert center.shape == (224, 224, 3)
    reference = np.clip(np.round(views.resize_shorter_side(tf.cast(image, tf.uint8), 256)
                                 .numpy()), 0, 255)[16:240, 58:282]
    np.testing.assert_array_equal(center, reference)  # whole pixel values, as an app's resizer
    crops = views.ten_crop(image).numpy()
    assert crops.shape == (10, 224, 224, 3)
    np.testing.assert_allclose(crops[0], resized[:224, :224])
    np.testing.assert_allclose(crops[3], resized[-224:, -224:])
    np.testing.assert_allclose(crops[4], resized[16:240, 58:282])
    np.testing.assert_allclose(crops[5:], crops[:5, :, ::-1])
    scales = views.multi_scale(image)
    assert [v.shape[:2] for v in scales] == [
        (224, 299), (256, 341), (384, 512), (480, 640), (640, 853)]


def test_stretch_view_resizes_only_images_of_another_size_and_pads():
    view = views.View(12, 12, 1, "stretch", pad=2)
    same = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1)
    out = views.apply(same, view).numpy()
    assert out.shape == (1, 12, 12, 1)
    np.testing.assert_array_equal(out[0, 2:10, 2:10], same[0].astype(np.float32))
    assert out[0, :2].sum() == 0 and out[0, :, -2:].sum() == 0
    other = views.apply(np.full((1, 20, 10, 1), 77, np.uint8), view).numpy()
    assert other.shape == (1, 12, 12, 1) and (other[0, 2:10, 2:10] == 77).all()
    with pytest.raises(ValueError, match="resize 'squash'"):
        views.View(8, 8, 3, "squash")


# ---------------------------------------------------------------------------- pipeline


def toy_dataset(n=64, size=8, channels=1):
    """Image i is filled with (i mod 251) + 1, label i: order and identity are visible."""
    def make(i):
        value = tf.cast(i % 251 + 1, tf.uint8)
        return tf.fill([size, size, channels], value), i
    return tf.data.Dataset.range(n).map(make)


TOY_INFO = data.DatasetInfo("toy", 64, (8, 8, 1), 64, 0, tuple(map(str, range(64))),
                            num_examples=64)
TOY_VIEW = views.View(8, 8, 1)


def take(ds, k):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(k)]


def examples(kind, n=64):
    """The toy split in memory or streamed (the two kinds of `pipeline.prepare`)."""
    ds = toy_dataset(n)
    if kind == "memory":
        images, labels = data.to_arrays(ds, TOY_VIEW)
        return pipeline.Examples(TOY_INFO, TOY_VIEW, images, labels)
    return pipeline.Examples(TOY_INFO, TOY_VIEW, dataset=ds)


@needs_debian_files
def test_training_and_evaluation_batches_of_fashion_mnist(fashion_dir):
    ds, info = data.load("fashion_mnist", "train[:512]", data_dir=fashion_dir)
    batches = take(pipeline.batches(ds, info, training=True, batch_size=100, seed=3), 6)
    for x, y in batches:  # 6 batches > 5.12: repeats past the end of the slice
        assert x.shape == (100, 32, 32, 1) and x.dtype == np.float32
        assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
        assert 0 <= x.min() and x.max() <= 255 and x.max() > 100
    test = pipeline.batches(ds, info, training=False, batch_size=100)
    x, y = zip(*take(test, 10))
    assert [len(b) for b in y] == [100] * 5 + [12]  # one pass, remainder kept
    images, labels = as_numpy(ds)
    np.testing.assert_array_equal(np.concatenate(x)[:, 2:30, 2:30], images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(y), labels)


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_same_seed_same_batches_other_seed_differs(kind):
    def run(seed):
        return take(pipeline.train_batches(examples(kind), batch_size=16, seed=seed,
                                           augment="none", shuffle_buffer=32), 8)
    a, b, c = run(5), run(5), run(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    # Shuffled: each epoch is a permutation, and not the identity; images follow labels.
    for epoch in (a[:4], a[4:8]):
        labels = np.concatenate([y for _, y in epoch])
        assert sorted(labels) == list(range(64)) and list(labels) != list(range(64))
    for x, y in a:
        np.testing.assert_array_equal(x[:, 0, 0, 0], y % 251 + 1)


def test_in_memory_batches_straddle_epochs_and_cover_tiny_splits():
    # 10 images, batch 16: one batch holds images of two (or three) epochs.
    tiny = pipeline.Examples(TOY_INFO, TOY_VIEW, *data.to_arrays(toy_dataset(10), TOY_VIEW))
    labels = np.concatenate([y for _, y in take(
        pipeline.train_batches(tiny, batch_size=16, augment="none"), 5)])
    for e in range(8):
        assert sorted(labels[10 * e:10 * e + 10]) == list(range(10)), e


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_checkpointed_iterator_resumes_identically(kind, tmp_path):
    def make():
        return pipeline.train_batches(examples(kind), batch_size=16, seed=1, shuffle_buffer=20)

    straight = iter(make())
    for _ in range(5):
        next(straight)
    path = tf.train.Checkpoint(iterator=straight).save(str(tmp_path / "ckpt"))
    expected = [next(straight) for _ in range(10)]  # crosses an epoch boundary

    resumed = iter(make())
    next(resumed)  # a moved iterator, to show that restore really replaces its state
    tf.train.Checkpoint(iterator=resumed).restore(path).assert_consumed()
    for (xe, ye), (xr, yr) in zip(expected, (next(resumed) for _ in range(10))):
        np.testing.assert_array_equal(xe.numpy(), xr.numpy())
        np.testing.assert_array_equal(ye.numpy(), yr.numpy())


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_input_context_shards_into_halves(kind):
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        batches = take(pipeline.train_batches(examples(kind), batch_size=16, augment="none",
                                              input_context=context, shuffle_buffer=64), 4)
        assert all(len(y) == 8 for _, y in batches)  # per-replica batch
        seen.append(set(np.concatenate([y for _, y in batches]).tolist()))
        evaluation = take(pipeline.eval_batches(examples(kind), batch_size=16,
                                                input_context=context), 8)
        assert sum(len(y) for _, y in evaluation) == 32
    assert len(seen[0]) == len(seen[1]) == 32
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(64))


def test_variable_size_images_need_image_size():
    info = data.DatasetInfo("var", 2, (None, None, 3), 1, 1, ("a", "b"))
    with pytest.raises(ValueError, match="--image_size"):
        views.for_dataset(info, None, "cifar")


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

    with pytest.raises(ValueError, match="3 sizes: .*--image_size"):
        views.for_dataset(info, None, "cifar")
    batches = take(pipeline.batches(ds, info, training=True, batch_size=4, image_size=16), 3)
    for x, y in batches:
        assert x.shape == (4, 16, 16, 3)
        # a crop of a constant image is that constant or the zero pad, per image
        for image, label in zip(x, y):
            values = set(np.unique(np.round(image, 3)).tolist()) - {0.0}
            assert len(values) == 1 and (int(values.pop()) - 1) // 10 == label
    evaluation = pipeline.batches(test, test_info, training=False, batch_size=2,
                                  augment="imagenet", image_size=16)
    (x, _), = take(evaluation, 1)
    assert x.shape == (2, 16, 16, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        data.load(f"folder:{tmp_path / 'nope'}", "train")
    write_png(tmp_path / "train" / "a" / "0.png", 1, 4, 4)
    # no test split: one is held out of 'train' (tests/train/test_folders.py), but a class of
    # one image keeps it for training
    with pytest.raises(ValueError, match="'test' does not exist.*too few images"):
        data.load(f"folder:{tmp_path}", "test")
    with pytest.raises(ValueError, match="holdout=1.5"):
        data.load(f"folder:{tmp_path}", "train", holdout=1.5)
    with pytest.raises(ValueError, match="bad_images='keep'"):
        data.load(f"folder:{tmp_path}", "train", bad_images="keep")


@pytest.mark.parametrize("fmt,ext,mode", [("PNG", "png", "RGB"), ("PNG", "png", "L"),
                                          ("JPEG", "jpg", "RGB"), ("BMP", "bmp", "RGB"),
                                          ("GIF", "gif", "P"), ("JPEG", "jpeg", "L")])
def test_header_sizes_match_the_decoded_images(tmp_path, fmt, ext, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(17, 23), (40, 9)]):
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(tmp_path / f"{i}.{ext}", format=fmt)
    for i, (h, w) in enumerate([(17, 23), (40, 9)]):
        path = str(tmp_path / f"{i}.{ext}")
        assert image_files.check(path)[1:3] == (h, w)  # from the header
        decoded = image_files.decode(path).numpy()
        assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8  # RGB, whatever mode


def test_folder_of_one_size_is_known_before_decoding_and_sliced_like_tfds(tmp_path):
    for k, name in enumerate(["b", "a"]):
        for i in range(5):
            write_png(tmp_path / "train" / name / f"{i:02d}.png", 10 * k + i + 1, 12, 14)
    write_png(tmp_path / "test" / "a" / "0.png", 0, 12, 14)  # a test split: 'train' is whole
    ds, info = data.load(f"folder:{tmp_path}", "train")
    assert info.image_shape == (12, 14, 3) and info.class_names == ("a", "b")
    view = views.for_dataset(info)
    assert view.shape == (12, 14, 3) and view.pad == 0
    # Order: by SHA-256 of "class/file name" ('a' holds values 11..15, 'b' 1..5), so classes
    # mix in every slice and each file keeps its place when others are added.
    values = [int(x[0, 0, 0]) for x, _ in ds.as_numpy_iterator()]
    names = {10 * (c == "a") + i + 1: f"{c}/{i:02d}.png" for c in "ab" for i in range(5)}
    assert values == sorted(names, key=lambda v: hashlib.sha256(names[v].encode()).hexdigest())
    assert set(values[:5]) & set(range(1, 6)) and set(values[:5]) & set(range(11, 16))
    for split, expected in (("train[:3]", values[:3]), ("train[-2:]", values[-2:]),
                            ("train[20%:40%]", values[2:4])):
        part, part_info = data.load(f"folder:{tmp_path}", split)
        assert [int(x[0, 0, 0]) for x, _ in part.as_numpy_iterator()] == expected, split
        assert part_info.num_examples == len(expected)
    with pytest.raises(ValueError, match="selects no images"):
        data.load(f"folder:{tmp_path}", "train[5:2]")
