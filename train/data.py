"""Datasets: one registry of TFDS datasets and class-per-folder trees, read offline.

`load(name, split)` gives raw `(image uint8 (h, w, C), label int64)` examples in a fixed order
and a `DatasetInfo`. How an image becomes the model's input is the evaluation view
(`train.views`); batching, shuffling and augmentation are `train.pipeline`; the normalization
(mean subtraction, sec. 4.2) is computed here by `normalization` and lives inside the model.

Nothing is downloaded at run time. `fashion_mnist` is prepared offline from Debian's
`dataset-fashion-mnist` files (`train.fashion_mnist`); any other TFDS dataset must be prepared
already, or its files must lie in `<data_dir>/downloads/manual`, or `load` fails at once saying
what to place where. `folder:/path` reads `root/[<split>/]<class>/<image>` by the rules of
`train.folders`; `describe` and `record` say what they found; `folder_images` lists its files.
"""

import collections
import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from train import fashion_mnist, folders, views
from train.fashion_mnist import FASHION_MNIST_SOURCE
from train.rundir import file_lock

FOLDER_PREFIX = "folder:"
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)  # per channel, pixel units
IN_MEMORY_BYTES = int(float(os.environ.get("KERAS_RESNET_IN_MEMORY_GB", "2")) * 2**30)
"""Splits whose images (at the view's size) fit in this many bytes are held in memory."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a recipe need to know about a dataset.

    image_shape: (h, w, C) of `load`'s images; None for a dimension that varies.
    pad: zero pixels the default view adds on each side (fashion_mnist: 2, 28x28 -> 32x32).
    crop_view: evaluate on a center crop (ImageNet-style datasets).
    mean: 'per_pixel' (the training split's mean image, sec. 4.2), 'imagenet' (ImageNet's
        per-channel mean), 'per_channel' (the training split's, for folders).
    split, num_examples: the split `load` read (as given, e.g. 'train[:45000]') and its size.
    sizes: for folders, the distinct (h, w) of the split's images (at most a few listed).
    folder: for folders, the whole tree as `train.folders.scan` found it (what `record` keeps).
    """

    name: str
    num_classes: int
    image_shape: tuple
    num_train: int | None
    num_test: int | None
    class_names: tuple
    split: str = ""
    num_examples: int | None = None
    pad: int = 0
    crop_view: bool = False
    mean: str = "per_pixel"
    sizes: tuple = ()
    folder: folders.Tree | None = None

    def describe_sizes(self) -> str:
        if not self.sizes:
            return "sizes vary"
        shown = ", ".join(f"{h}x{w}" for h, w in self.sizes[:4])
        more = f" and {len(self.sizes) - 4} more" if len(self.sizes) > 4 else ""
        return f"{len(self.sizes)} sizes: {shown}{more}"


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A registry row: how to find one TFDS dataset and what to ask for when it is missing."""

    tfds_name: str
    test_split: str  # the TFDS split that serves as 'test'
    files: tuple = ()  # file names TFDS reads from the manual dir
    where: str = ""  # where a person gets those files
    pad: int = 0
    crop_view: bool = False
    mean: str = "per_pixel"


DATASETS = {
    "fashion_mnist": _Spec("fashion_mnist", "test", pad=2),
    "cifar10": _Spec("cifar10", "test", ("cifar-10-binary.tar.gz",),
                     "https://www.cs.toronto.edu/~kriz/"),
    "cifar100": _Spec("cifar100", "test", ("cifar-100-binary.tar.gz",),
                      "https://www.cs.toronto.edu/~kriz/"),
    "imagenette": _Spec("imagenette/full-size-v2", "validation", ("imagenette2.tgz",),
                        "https://s3.amazonaws.com/fast-ai-imageclas/", crop_view=True,
                        mean="imagenet"),
    "imagenet2012": _Spec("imagenet2012", "validation",
                          ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
                          "https://image-net.org/ (after registration)", crop_view=True,
                          mean="imagenet"),
}


def default_data_dir() -> str:
    """$KERAS_RESNET_DATA, else ~/tensorflow_datasets."""
    return os.path.expanduser(
        os.environ.get("KERAS_RESNET_DATA") or os.path.join("~", "tensorflow_datasets"))


def prepare_fashion_mnist(data_dir: str | None = None,
                          source_dir: str = FASHION_MNIST_SOURCE) -> str:
    """Prepares TFDS `fashion_mnist` offline (see `train.fashion_mnist`); returns the data_dir."""
    return fashion_mnist.prepare(data_dir or default_data_dir(), source_dir)


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
    with file_lock(os.path.join(data_dir, f".{spec.tfds_name.replace('/', '_')}.lock")):
        if not builder.is_prepared():
            logging.info("Preparing %s in %s from %s", name, data_dir, manual)
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=manual, try_download_gcs=False))


def _parse_split(split: str) -> tuple[str, str]:
    """'train[:45000]' -> ('train', '[:45000]')."""
    match = re.fullmatch(r"(\w+)(\[[^\]]*\])?", split) if isinstance(split, str) else None
    if not match:
        raise ValueError(
            f"split {split!r} is not valid: use 'train' or 'test', optionally sliced as in "
            "TFDS, e.g. 'train[:45000]' or 'test[:10%]'.")
    return match.group(1), match.group(2) or ""


def _slice_bounds(sliced: str, n: int) -> tuple:
    """TFDS-style '[a:b]' (ints, negative ints or percentages) -> (start, stop) within n."""
    if not sliced:
        return 0, n
    match = re.fullmatch(r"\[(-?\d+%?)?:(-?\d+%?)?\]", sliced)
    if not match:
        raise ValueError(f"split slice {sliced!r} is not like '[:100]', '[100:]' or '[:10%]'.")

    def bound(text, default):
        if text is None:
            return default
        value = round(int(text[:-1]) * n / 100) if text.endswith("%") else int(text)
        return max(0, min(n, value + n if value < 0 else value))

    start, stop = bound(match.group(1), 0), bound(match.group(2), n)
    if stop <= start:
        raise ValueError(f"split slice {sliced!r} selects no images of the {n}.")
    return start, stop


def _split_images(tree: folders.Tree, split: str) -> tuple:
    """The `folders.Image`s of `split` ('train', 'test[:10%]', 'all': every split's, for judging
    a model on a folder of new photos) of a scanned tree."""
    base, sliced = _parse_split(split)
    images = (tuple(im for name in sorted(tree.splits) for im in tree.splits[name])
              if base == "all" else tree.splits[tree.resolve(base)])
    start, stop = _slice_bounds(sliced, len(images))
    return images[start:stop]


def folder_images(info: DatasetInfo) -> tuple:
    """The `train.folders.Image`s of a folder split `load` read, in `load`'s order (its
    `info.split`, sliced as `load` slices it)."""
    tree = info.folder
    if tree is None:
        raise ValueError(f"folder_images needs the info of a folder split ({FOLDER_PREFIX}...), "
                         f"got {info.name!r}: read a dataset's examples from `load`.")
    images = _split_images(tree, info.split)
    if len(images) != info.num_examples:
        raise ValueError(f"folder split {info.split!r} of {tree.root} now holds {len(images)} "
                         f"images, {info.num_examples} when it was loaded: load it again.")
    return images


def _load_folder(root: str, split: str, bad_images: str, holdout) -> tuple:
    tree = _scan(root, bad_images, holdout)
    images = _split_images(tree, split)
    found = sorted({(im.height, im.width) for im in images})
    shape = (*found[0], 3) if len(found) == 1 else (None, None, 3)

    def count(s):
        try:
            return len(tree.splits[tree.resolve(s)])
        except ValueError:
            return None

    info = DatasetInfo(
        name=FOLDER_PREFIX + root, num_classes=len(tree.class_names), image_shape=shape,
        num_train=count("train"), num_test=count("test"), class_names=tree.class_names,
        split=split, num_examples=len(images), mean="per_channel", sizes=tuple(found),
        folder=tree)
    return folders.dataset(images), info


_WARNED = set()


def _scan(root, bad_images, holdout):
    """`folders.scan` of `root`, warning once per process about the images it left out."""
    tree = folders.scan(root, holdout=holdout, bad_images=bad_images)
    if tree.skipped and (root, tree.skipped) not in _WARNED:
        _WARNED.add((root, tree.skipped))
        shown = "; ".join(f"{s.path} ({s.reason})" for s in tree.skipped[:10])
        logging.warning("%d broken image(s) in %s left out (all listed in the run directory's "
                        "folder.json): %s%s", len(tree.skipped), root, shown,
                        " ..." if len(tree.skipped) > 10 else "")
    return tree


def _folder_root(name):
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        return os.path.abspath(os.path.expanduser(name[len(FOLDER_PREFIX):]))
    return None


def load(name: str, split: str, *, data_dir: str | None = None, bad_images: str = "skip",
         holdout: float | None = None):
    """Raw examples `(image uint8 (h, w, C), label int64)` in a fixed order, and their info.

    name: one of DATASETS ('fashion_mnist', 'cifar10', 'cifar100', 'imagenette',
        'imagenet2012'), or 'folder:/path/to/root' for root/<class>/<image> or
        root/<split>/<class>/<image> (RGB).
    split: 'train' or 'test' ('test' reads the validation split where there is no test
        split, e.g. ImageNet), with TFDS slicing such as 'train[:45000]'.
    data_dir: TFDS data dir; default $KERAS_RESNET_DATA or ~/tensorflow_datasets.
    fashion_mnist's images are its own 28x28 (the default view pads them to 32x32).
    bad_images, holdout: folders only (`train.folders`): 'skip' leaves broken images out with
        a warning, 'fail' raises naming them; `holdout` is the fraction of each class held out
        as 'test' when the tree has no test/val split (None: 0.2, the 80/20 split Ultralytics
        and Model Maker make; enough test images per class to see a class fail, most for
        training). Every reader of a folder passes the same two values and gets the same files.
    """
    root = _folder_root(name)
    if root is not None:
        return _load_folder(root, split, bad_images, holdout)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {sorted(DATASETS)} or "
                         f"'{FOLDER_PREFIX}/path/to/root' (root/<split>/<class>/<image>).")
    base, sliced = _parse_split(split)
    spec = DATASETS[name]
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    with fashion_mnist.quiet_tfds():
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
        prepared = builder.is_prepared()
    if not prepared:
        if name == "fashion_mnist":
            prepare_fashion_mnist(data_dir)
        else:
            _prepare_from_manual_dir(name, spec, builder, data_dir)
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)  # reads the written info
    splits = builder.info.splits
    tf_split = folders.choose_split(base, splits.keys(), (spec.test_split,), name) + sliced
    ds = builder.as_dataset(split=tf_split, as_supervised=True, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))
    labels = builder.info.features["label"]
    info = DatasetInfo(
        name=name, num_classes=labels.num_classes,
        image_shape=tuple(builder.info.features["image"].shape),
        num_train=splits["train"].num_examples, num_test=splits[spec.test_split].num_examples,
        class_names=tuple(labels.names), split=split,
        num_examples=splits[tf_split].num_examples, pad=spec.pad, crop_view=spec.crop_view,
        mean=spec.mean)
    return ds, info


# ------------------------------------------------------------- what a folder holds

FEW_IMAGES = 10
"""A class with fewer images than this in a split gets a warning in `describe`."""


def describe(name: str, *, data_dir: str | None = None, bad_images: str = "skip",
             holdout: float | None = None) -> str:
    """A folder dataset as a person checks it before training: classes x splits image counts,
    the sizes found, whether a split was made, what was ignored and skipped, and warnings for
    classes with few images or missing from a split. '' for TFDS datasets."""
    root = _folder_root(name)
    if root is None:
        return ""
    tree = _scan(root, bad_images, holdout)
    splits = sorted(tree.splits, key=lambda s: (s.lower() != "train", s))
    counts = {s: collections.Counter(im.label for im in tree.splits[s]) for s in splits}
    width = max(len(n) for n in (*tree.class_names, "class", "total"))
    lines = [f"folder {root}: {len(tree.class_names)} classes, "
             f"{sum(len(v) for v in tree.splits.values())} images"]
    lines.append("  ".join([f"{'class':<{width}}", *(f"{s:>7}" for s in splits)]))
    for label, cls in enumerate(tree.class_names):
        lines.append("  ".join([f"{cls:<{width}}", *(f"{counts[s][label]:>7}" for s in splits)]))
    lines.append("  ".join([f"{'total':<{width}}", *(f"{len(tree.splits[s]):>7}" for s in splits)]))
    sizes = collections.Counter((im.height, im.width) for v in tree.splits.values() for im in v)
    shown = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(4))
    lines.append(f"image sizes read: {len(sizes)} ({shown}{', ...' if len(sizes) > 4 else ''})")
    lines += [f"read from copies in the cache (train.copies): {n}" for n in [sum(
        im.read != f"{root}{os.sep}{im.path}" for v in tree.splits.values() for im in v)] if n]
    if tree.split_made:
        lines.append(f"split made: no test folder, so {tree.holdout:.0%} of each class "
                     f"({len(tree.held_out)} images, chosen by file-name hash) is 'test'")
    else:
        lines.append(f"split: the tree's own ({', '.join(splits)})")
    why = collections.Counter(left.reason for left in tree.ignored)
    lines.append(f"ignored: {len(tree.ignored)} files" + (" (" + ", ".join(
        f"{n} {r}" for r, n in why.most_common()) + ")" if why else ""))
    lines.append(f"skipped: {len(tree.skipped)} broken images" + "".join(
        f"\n  {s.path}: {s.reason}" for s in tree.skipped[:10])
        + (f"\n  ... ({len(tree.skipped) - 10} more)" if len(tree.skipped) > 10 else ""))
    for s in splits:
        for label, cls in enumerate(tree.class_names):
            n = counts[s][label]
            if n == 0:
                lines.append(f"warning: class {cls!r} has no images in split {s!r}")
            elif n < FEW_IMAGES:
                lines.append(f"warning: class {cls!r} has only {n} images in split {s!r}")
    return "\n".join(lines)


def record(info: DatasetInfo, run_dir: str) -> dict:
    """Writes what the folder rules found into `run_dir`: folder.json (counts, skipped images
    with reasons, ignored files, the split made) and held_out.txt (the held-out paths, one per
    line, relative to the root) when a split was made. Returns entries for summary.json; {} for
    TFDS datasets."""
    tree = info.folder
    if tree is None:
        return {}
    counts = {s: len(v) for s, v in tree.splits.items()}
    entries = {"folder_images": counts, "skipped_images": len(tree.skipped),
               "ignored_files": len(tree.ignored), "split_made": tree.split_made,
               "holdout": tree.holdout}
    content = {**entries, "root": tree.root, "class_names": list(tree.class_names),
               "skipped": [s._asdict() for s in tree.skipped],
               "ignored": [s._asdict() for s in tree.ignored],
               "held_out_list": "held_out.txt" if tree.split_made else None}
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "folder.json"), "w") as f:
        json.dump(content, f, indent=1)
    if tree.split_made:
        with open(os.path.join(run_dir, "held_out.txt"), "w") as f:
            f.write("".join(p + "\n" for p in tree.held_out))
    return entries


# ------------------------------------------------------------------ arrays and statistics


def fits_in_memory(info: DatasetInfo, view: views.View) -> bool:
    """Whether the split's images at the view's size fit in IN_MEMORY_BYTES."""
    if not info.num_examples:
        return False
    h, w = view.inner_size if view.resize == "stretch" else (view.height, view.width)
    return info.num_examples * h * w * view.channels <= IN_MEMORY_BYTES


def to_arrays(ds: tf.data.Dataset, view: views.View) -> tuple:
    """(uint8 (N, h, w, C) images through the view's resize step, int32 (N,) labels)."""
    resized = ds.map(lambda x, y: (tf.cast(views.resize(x, view), tf.uint8), tf.cast(y, tf.int32)),
                     num_parallel_calls=tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in resized.batch(4096).prefetch(2).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError("the split holds no images.")
    return np.concatenate(images), np.concatenate(labels)


def normalization(info: DatasetInfo, view: views.View, images=None, ds=None,
                  limit: int = 10_000) -> np.ndarray:
    """The mean the model subtracts (pixel units, float32), per the dataset's `mean` kind:
    'per_pixel' (H, W, C) over the training images through the view (the paper's per-pixel
    mean, sec. 4.2), 'per_channel' (C,), 'imagenet' (3,).

    images: the training split as `to_arrays` gives it, or ds: its raw examples (streamed:
    the first `limit` images).
    """
    if info.mean == "imagenet":
        return np.asarray(IMAGENET_RGB_MEAN, np.float32)[:view.channels]
    if images is None:
        images = np.stack([views.apply(x, view).numpy() for x, _ in ds.take(limit)])
    else:
        p = view.pad
        images = images if not p else np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)])
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), 4096):
        total += images[start:start + 4096].sum(axis=0, dtype=np.float64)
    mean = total / len(images)
    if info.mean == "per_channel":
        mean = mean.reshape(-1, mean.shape[-1]).mean(axis=0)
    return mean.astype(np.float32)
