"""Datasets and input pipelines for ResNet training and evaluation.

`load(name, split)` gives raw `(image uint8 (H, W, C), label int64)` examples and a
`DatasetInfo`; `pipeline(ds, info, ...)` shuffles, augments, batches and prefetches them.
Images stay in raw pixel units [0, 255]: the model subtracts `info.mean` itself (a
`keras.layers.Normalization` layer), so exported models take raw pixels.

Every random choice is stateless: `shuffle(seed=...)`, and augmentation seeded from the
element's index (`Dataset.enumerate`), so a `tf.data` iterator saved with
`tf.train.Checkpoint(iterator=it)` resumes bitwise identically.

Nothing is downloaded at run time. `fashion_mnist` is prepared offline from Debian's
`dataset-fashion-mnist` files (see `prepare_fashion_mnist`); any other TFDS dataset must be
prepared already, or its files must lie in `<data_dir>/downloads/manual`, or `load` fails at
once saying what to place where.
"""

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import struct
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

AUTOTUNE = tf.data.AUTOTUNE
AUGMENTATIONS = ("cifar", "imagenet", "none")
FASHION_MNIST_SOURCE = "/usr/share/datasets/fashion-mnist"
# Per-channel RGB mean of ImageNet (pixel units), used where images have no fixed size.
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a recipe need to know about a dataset.

    image_shape: (H, W, C) of `load`'s images (fashion_mnist: (32, 32, 1), after padding);
        None for a dimension that varies (imagenet2012, imagenette, folders).
    num_train, num_test: examples in the whole train / test split (None if unknown).
    mean: what the model subtracts, in pixel units, broadcastable against an image: the
        per-pixel mean image (H, W, C) of the whole training split for fixed-size datasets
        (paper sec. 4.2), ImageNet's per-channel mean (1, 1, 3) for imagenet2012/imagenette,
        None for folders.
    split, num_examples: the split `load` read (as given, e.g. 'train[:45000]') and its size.
    """

    name: str
    num_classes: int
    image_shape: tuple
    num_train: int | None
    num_test: int | None
    class_names: tuple
    mean: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    split: str = ""
    num_examples: int | None = None


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A registry row: how to find one TFDS dataset and what to ask for when it is missing."""

    tfds_name: str
    test_split: str  # the TFDS split that serves as 'test'
    files: tuple = ()  # file names TFDS reads from the manual dir
    where: str = ""  # where a person gets those files
    pad: int = 0  # zero pixels added on each side by `load`
    mean: str = "per_pixel"  # 'per_pixel' | 'imagenet'


DATASETS = {
    "fashion_mnist": _Spec("fashion_mnist", "test", pad=2),
    "cifar10": _Spec(
        "cifar10", "test", ("cifar-10-binary.tar.gz",), "https://www.cs.toronto.edu/~kriz/"
    ),
    "cifar100": _Spec(
        "cifar100", "test", ("cifar-100-binary.tar.gz",), "https://www.cs.toronto.edu/~kriz/"
    ),
    "imagenette": _Spec(
        "imagenette/full-size-v2", "validation", ("imagenette2.tgz",),
        "https://s3.amazonaws.com/fast-ai-imageclas/", mean="imagenet",
    ),
    "imagenet2012": _Spec(
        "imagenet2012", "validation", ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
        "https://image-net.org/ (after registration)", mean="imagenet",
    ),
}
FOLDER_PREFIX = "folder:"

# Upstream gzip headers of the Fashion-MNIST files: FNAME flag, original name, mtime.
_FASHION_MNIST_MTIME = {"train": 1504176606, "t10k": 1504176627}
_FASHION_MNIST_FILES = tuple(
    f"{part}-{kind}-ubyte.gz"
    for part in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)


def default_data_dir() -> str:
    """$KERAS_RESNET_DATA, else ~/tensorflow_datasets."""
    return os.path.expanduser(
        os.environ.get("KERAS_RESNET_DATA") or os.path.join("~", "tensorflow_datasets")
    )


@contextlib.contextmanager
def _file_lock(path):
    """Exclusive inter-process lock held for the `with` block."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _upstream_gzip(data: bytes, file_name: str) -> bytes:
    """Debian's .gz bytes with the 10-byte header upstream had (the deflate stream is equal)."""
    mtime = _FASHION_MNIST_MTIME[file_name.split("-")[0]]
    original = file_name[: -len(".gz")].encode() + b"\0"
    header = data[:3] + bytes([0x08]) + struct.pack("<I", mtime) + data[8:10]
    return header + original + data[10:]


def prepare_fashion_mnist(
    data_dir: str | None = None, source_dir: str = FASHION_MNIST_SOURCE
) -> str:
    """Prepares TFDS `fashion_mnist` offline from Debian's IDX files; returns the data_dir.

    Debian's files differ from upstream's only in the gzip header. Copies with upstream's
    header go into a temporary manual dir, and TFDS prepares from there, verifying its own
    recorded sizes and SHA-256 (no `register_checksums`). Idempotent; a file lock keeps two
    processes from preparing at once, and TFDS moves the finished dataset into place.
    """
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    missing = [f for f in _FASHION_MNIST_FILES if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"fashion_mnist is not prepared in {data_dir} and {source_dir} lacks {missing}. "
            "Install the files with `apt-get install dataset-fashion-mnist`, or pass "
            "source_dir= a folder holding the four Fashion-MNIST .gz files, or data_dir= a "
            "TFDS data dir where fashion_mnist is already prepared."
        )
    with _file_lock(os.path.join(data_dir, ".fashion_mnist.lock")):
        if builder.is_prepared():  # another process finished while we waited
            return data_dir
        logging.info("Preparing fashion_mnist in %s from %s", data_dir, source_dir)
        work = tempfile.mkdtemp(prefix=".fashion_mnist_prepare_", dir=data_dir)
        try:
            manual = os.path.join(work, "manual")
            os.makedirs(manual)
            for name in _FASHION_MNIST_FILES:
                with open(os.path.join(source_dir, name), "rb") as f:
                    data = _upstream_gzip(f.read(), name)
                with open(os.path.join(manual, name), "wb") as f:
                    f.write(data)
            builder.download_and_prepare(
                download_dir=os.path.join(work, "downloads"),
                download_config=tfds.download.DownloadConfig(
                    manual_dir=manual, try_download_gcs=False
                ),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return data_dir


def _prepare_from_manual_dir(name: str, spec: _Spec, builder, data_dir: str) -> None:
    """Prepares `builder` from files in <data_dir>/downloads/manual, or raises at once."""
    manual = os.path.join(data_dir, "downloads", "manual")
    missing = [f for f in spec.files if not os.path.isfile(os.path.join(manual, f))]
    if missing:
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {data_dir}, and nothing is downloaded at "
            f"run time. Either place {', '.join(spec.files)} (from {spec.where}) in {manual} "
            f"and call load() again: it is prepared from there, with TFDS's checksums; or run "
            f"`tfds build {spec.tfds_name} --data_dir=DIR` on a machine with network and copy "
            f"DIR/{spec.tfds_name.split('/')[0]} into {data_dir} (or pass data_dir=DIR, or "
            f"set KERAS_RESNET_DATA)."
        )
    with _file_lock(os.path.join(data_dir, f".{spec.tfds_name.replace('/', '_')}.lock")):
        if not builder.is_prepared():
            logging.info("Preparing %s in %s from %s", name, data_dir, manual)
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=manual, try_download_gcs=False
                )
            )


def _parse_split(split: str) -> tuple[str, str]:
    """'train[:45000]' -> ('train', '[:45000]')."""
    match = re.fullmatch(r"(\w+)(\[[^\]]*\])?", split) if isinstance(split, str) else None
    if not match:
        raise ValueError(
            f"split {split!r} is not valid: use 'train' or 'test', optionally sliced as in "
            "TFDS, e.g. 'train[:45000]' or 'test[:10%]'."
        )
    return match.group(1), match.group(2) or ""


def _resolve_split(base: str, available, test_names, name: str) -> str:
    if base == "test" and "test" not in available:
        base = next((s for s in test_names if s in available), base)
    if base not in available:
        raise ValueError(
            f"split {base!r} does not exist in {name!r}: use 'train' or 'test' "
            f"(available: {sorted(available)})."
        )
    return base


def _mean_image(builder, spec: _Spec) -> np.ndarray:
    """Per-pixel mean (H, W, C) float32 of the whole training split, cached as .npy."""
    path = os.path.join(str(builder.data_path), "keras_resnet_train_mean.npy")
    if os.path.exists(path):
        return np.load(path)
    ds = _tfds_examples(builder, "train", spec).batch(1000)
    total, count = 0.0, 0
    for images, _ in ds.as_numpy_iterator():
        total = total + images.sum(axis=0, dtype=np.float64)
        count += len(images)
    mean = (total / count).astype(np.float32)
    fd, tmp = tempfile.mkstemp(suffix=".npy", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        np.save(f, mean)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    return mean


def _tfds_examples(builder, split: str, spec: _Spec) -> tf.data.Dataset:
    ds = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    if spec.pad:
        p = spec.pad
        ds = ds.map(lambda x, y: (tf.pad(x, [[p, p], [p, p], [0, 0]]), y), AUTOTUNE)
    return ds


def _load_folder(root: str, split: str) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Class-per-folder tree root/<split>/<class>/<image>; classes are the sorted union."""
    if not os.path.isdir(root):
        raise ValueError(f"folder dataset root {root!r} is not a directory.")
    base, sliced = _parse_split(split)
    builder = tfds.folder_dataset.ImageFolder(root)
    splits = builder.info.splits
    tf_split = _resolve_split(base, splits.keys(), ("val", "validation"), root)
    ds = builder.as_dataset(split=tf_split, as_supervised=True, shuffle_files=False)
    total = splits[tf_split].num_examples
    num_examples = total
    if sliced:  # ImageFolder has no slicing of its own: translate TFDS's.
        (instr,) = tfds.core.ReadInstruction.from_spec(tf_split + sliced).to_absolute(
            {tf_split: splits[tf_split]}
        )
        start, stop = instr.from_ or 0, total if instr.to is None else instr.to
        ds = ds.skip(start).take(stop - start)
        num_examples = stop - start
    test = next((s for s in ("test", "val", "validation") if s in splits), None)
    labels = builder.info.features["label"]
    info = DatasetInfo(
        name=FOLDER_PREFIX + root,
        num_classes=labels.num_classes,
        image_shape=tuple(builder.info.features["image"].shape),
        num_train=splits["train"].num_examples if "train" in splits else None,
        num_test=splits[test].num_examples if test else None,
        class_names=tuple(labels.names),
        mean=None,
        split=split,
        num_examples=num_examples,
    )
    return ds, info


def load(
    name: str, split: str, *, data_dir: str | None = None
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Raw examples `(image uint8 (H, W, C), label int64)` in a fixed order, and their info.

    name: one of DATASETS ('fashion_mnist', 'cifar10', 'cifar100', 'imagenette',
        'imagenet2012'), or 'folder:/path/to/root' for root/<split>/<class>/<image>
        (decoded RGB, no resizing: pass `image_size` to `pipeline`).
    split: 'train' or 'test' ('test' reads the validation split where there is no test
        split, e.g. ImageNet), with TFDS slicing such as 'train[:45000]'.
    data_dir: TFDS data dir; default $KERAS_RESNET_DATA or ~/tensorflow_datasets.

    fashion_mnist's 28x28 images are zero-padded to 32x32 (2 pixels on each side), so the
    CIFAR network and augmentation apply unchanged; it is prepared offline on first use.
    """
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        return _load_folder(os.path.expanduser(name[len(FOLDER_PREFIX):]), split)
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}: use one of {sorted(DATASETS)} or "
            f"'{FOLDER_PREFIX}/path/to/root' (root/<split>/<class>/<image>)."
        )
    base, sliced = _parse_split(split)
    spec = DATASETS[name]
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "fashion_mnist":
            prepare_fashion_mnist(data_dir)
        else:
            _prepare_from_manual_dir(name, spec, builder, data_dir)
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)  # reads the written info
    splits = builder.info.splits
    tf_split = _resolve_split(base, splits.keys(), (spec.test_split,), name) + sliced
    ds = _tfds_examples(builder, tf_split, spec)

    h, w, c = builder.info.features["image"].shape
    if spec.pad:
        h, w = h + 2 * spec.pad, w + 2 * spec.pad
    if spec.mean == "imagenet":
        mean = np.array(IMAGENET_RGB_MEAN, np.float32).reshape(1, 1, 3)
    else:
        mean = _mean_image(builder, spec)
    labels = builder.info.features["label"]
    info = DatasetInfo(
        name=name,
        num_classes=labels.num_classes,
        image_shape=(h, w, c),
        num_train=splits["train"].num_examples,
        num_test=splits[spec.test_split].num_examples,
        class_names=tuple(labels.names),
        mean=mean,
        split=split,
        num_examples=splits[tf_split].num_examples,
    )
    return ds, info


# ---------------------------------------------------------------- augmentation and views


def _size(image_size):
    """None | int | (h, w) -> None | (h, w)."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    return tuple(int(s) for s in image_size)


def _channels(image):
    return image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]


def resize_shorter_side(image, shorter):
    """Resizes (H, W, C) so that min(H, W) == shorter, keeping the aspect; float32 out."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(shorter, tf.float32) / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), tf.cast(shorter, tf.int32))
    return tf.image.resize(image, new_hw, antialias=True)


def cifar_augment(image, seed, pad=4):
    """CIFAR augmentation (paper sec. 4.2): zero-pad 4 pixels on each side, take a random
    crop of the original size and flip it horizontally with probability 1/2.

    image: (H, W, C), any dtype (kept; the pad is 0 in pixel units). seed: int tensor (2,).
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = image.shape if image.shape.is_fully_defined() else tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, size, seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def imagenet_augment(image, seed, size=224, scale=(256, 480)):
    """ImageNet scale augmentation (paper sec. 3.4): resize so the shorter side is uniform
    in [256, 480], take a random size x size crop, flip with probability 1/2.

    image: (H, W, C); size: int or (h, w); seed: int tensor (2,). Returns float32 (h, w, C).
    The paper's color augmentation is not applied.
    """
    h, w = _size(size)
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shorter = tf.random.stateless_uniform(
        [], s[0], minval=scale[0], maxval=scale[1] + 1, dtype=tf.int32
    )
    image = resize_shorter_side(image, tf.maximum(shorter, max(h, w)))
    image = tf.image.stateless_random_crop(image, [h, w, _channels(image)], seed=s[1])
    return tf.image.stateless_random_flip_left_right(image, seed=s[2])


def _crop(image, top, left, h, w):
    return image[top : top + h, left : left + w]


def center_crop(image, size=224, resize_shorter=256):
    """Single-crop evaluation view: shorter side to `resize_shorter` (None: keep), then the
    central size x size crop. float32 (h, w, C)."""
    h, w = _size(size)
    image = tf.cast(image, tf.float32)
    if resize_shorter is not None:
        image = resize_shorter_side(image, resize_shorter)
    shape = tf.shape(image)
    out = _crop(image, (shape[0] - h) // 2, (shape[1] - w) // 2, h, w)
    return tf.ensure_shape(out, [h, w, image.shape[-1]])


def ten_crop(image, size=224, resize_shorter=256):
    """10-crop testing (paper sec. 3.4, from AlexNet): the 4 corner crops and the center
    crop of the resized image, then the same 5 flipped. float32 (10, h, w, C)."""
    h, w = _size(size)
    image = tf.cast(image, tf.float32)
    if resize_shorter is not None:
        image = resize_shorter_side(image, resize_shorter)
    shape = tf.shape(image)
    bottom, right = shape[0] - h, shape[1] - w
    offsets = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = tf.stack([_crop(image, t, l, h, w) for t, l in offsets])
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    return tf.ensure_shape(crops, [10, h, w, image.shape[-1]])


def multi_scale(image, scales=(224, 256, 384, 480, 640)):
    """Fully-convolutional multi-scale views (paper sec. 3.4): one float32 image per scale,
    resized so that its shorter side equals the scale. Returns a list of (H_s, W_s, C)."""
    image = tf.cast(image, tf.float32)
    return [resize_shorter_side(image, s) for s in scales]


# ------------------------------------------------------------------------------ pipeline


def pipeline(
    ds: tf.data.Dataset,
    info: DatasetInfo,
    *,
    training: bool,
    batch_size: int,
    augment: str = "cifar",
    seed: int = 0,
    image_size=None,
    shuffle_buffer: int = 10_000,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool | None = None,
    repeat: bool | None = None,
) -> tf.data.Dataset:
    """Batches `(images float32 (B, H, W, C) in [0, 255], labels int32 (B,))`.

    training: shuffle (seeded), repeat and augment; otherwise the evaluation view.
    augment: 'cifar' (pad-crop-flip; evaluation: the image), 'imagenet' (scale
        augmentation; evaluation: center crop of the image resized to 256/224 of its
        size), 'none'. For 10-crop or multi-scale evaluation, map `ten_crop` or
        `multi_scale` over `load`'s dataset instead.
    image_size: int or (h, w): output size; images are resized to it ('cifar', 'none')
        or cropped to it ('imagenet', default 224). Needed where images vary in size.
    input_context: shard for `distribute_datasets_from_function`; batch_size is then the
        global batch and each pipeline yields `get_per_replica_batch_size(batch_size)`.
    drop_remainder, repeat: default to `training`.
    Mean subtraction is not done here: the model carries `info.mean`.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment {augment!r} is not one of {AUGMENTATIONS}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    size = _size(image_size)
    if size is None and augment != "imagenet" and None in tuple(info.image_shape):
        raise ValueError(
            f"{info.name} images have no fixed size {info.image_shape}: pass image_size "
            f"(e.g. 224) to pipeline() with augment={augment!r}."
        )
    crop = size or (224, 224)
    drop_remainder = training if drop_remainder is None else drop_remainder
    repeat = training if repeat is None else repeat

    pipeline_id = 0
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
    if training and shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def resize(image):
        if size is None or tuple(image.shape[:2]) == size:
            return image
        return tf.image.resize(image, size, antialias=True)

    def view(index, example):
        image, label = example
        if training and augment != "none":
            element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
            if augment == "cifar":
                image = cifar_augment(resize(image), element_seed)
            else:
                image = imagenet_augment(image, element_seed, size=crop)
        elif augment == "imagenet":
            image = center_crop(image, crop, resize_shorter=round(min(crop) * 256 / 224))
        else:
            image = resize(image)
        return tf.cast(image, tf.float32), tf.cast(label, tf.int32)

    ds = ds.enumerate().map(view, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(AUTOTUNE)
