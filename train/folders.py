"""Class-per-folder image trees: `root/<split>/<class>/<image>`, a user's own data.

Classes are the sorted union of the class folders of every split (so a split that lacks a
class keeps the others' labels, as TFDS's ImageFolder does); examples come in one fixed
shuffled order, the same on every machine (`files`). Images (PNG, JPEG, GIF, BMP) decode to
RGB uint8, whatever their own mode (grayscale photos become three equal channels). Their sizes
are read from the file headers, so a tree whose images all have one size is known to have it
before decoding.
"""

import hashlib
import os
import re
import struct

import tensorflow as tf

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
TEST_SPLITS = ("test", "val", "validation")


def splits(root: str) -> list:
    """The split folders of `root` that hold class folders."""
    if not os.path.isdir(root):
        raise ValueError(f"folder dataset root {root!r} is not a directory: pass "
                         "folder:/path/to/root with root/<split>/<class>/<image files>.")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not found:
        raise ValueError(f"folder dataset {root!r} has no split folders: expected "
                         "root/train/<class>/<image> (and root/test/<class>/<image>).")
    return found


def class_names(root: str) -> tuple:
    """Sorted union of the class folders over every split."""
    names = set()
    for split in splits(root):
        base = os.path.join(root, split)
        names.update(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    if not names:
        raise ValueError(f"folder dataset {root!r} has no class folders under its splits "
                         f"{splits(root)}: expected root/<split>/<class>/<image>.")
    return tuple(sorted(names))


def choose_split(base: str, available, test_names, name: str) -> str:
    """The split `base` names among `available`: 'test' falls back to the first of
    `test_names` that exists (a validation split), anything missing raises."""
    if base == "test" and "test" not in available:
        base = next((s for s in test_names if s in available), base)
    if base not in available:
        raise ValueError(f"split {base!r} does not exist in {name!r}: use 'train' or 'test' "
                         f"(available: {sorted(available)}).")
    return base


def resolve_split(root: str, base: str) -> str:
    """'train' or 'test' (test: the first of test, val, validation that exists)."""
    return choose_split(base, splits(root), TEST_SPLITS, root)


def files(root: str, split: str) -> tuple:
    """(paths, labels) of one split in a fixed shuffled order, so that any slice (`train[:500]`,
    a calibration sample, a streamed shuffle buffer) holds every class, as a TFDS split's
    shuffled files do: ordered by `order_key`, a hash of "class/file name", so every file's
    place is the same on every machine and adding an image moves no other."""
    names = class_names(root)
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(root, split, name)
        if not os.path.isdir(folder):
            continue
        for f in sorted(os.listdir(folder)):
            if f.lower().endswith(EXTENSIONS):
                paths.append(os.path.join(folder, f))
                labels.append(label)
    if not paths:
        raise ValueError(f"{os.path.join(root, split)} holds no images ({', '.join(EXTENSIONS)}) "
                         "in its class folders.")
    order = sorted(range(len(paths)), key=lambda i: order_key(names[labels[i]], paths[i]))
    return [paths[i] for i in order], [labels[i] for i in order]


def order_key(class_name: str, path: str) -> str:
    """The sort key of an image in its split: SHA-256 of "class/file name"."""
    return hashlib.sha256(f"{class_name}/{os.path.basename(path)}".encode()).hexdigest()


def slice_bounds(sliced: str, n: int) -> tuple:
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


def image_size(path: str):
    """(height, width) from an image file's header, or None when it cannot be read there."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return h, w
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", head[6:10])
            return h, w
        if head[:2] == b"BM" and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return abs(h), w
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            return _jpeg_size(f)
    return None


def _jpeg_size(f):
    """Walks JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)."""
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:
            continue
        length = struct.unpack(">H", f.read(2))[0]
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            _, h, w = struct.unpack(">BHH", f.read(5))
            return h, w
        f.seek(length - 2, os.SEEK_CUR)


def sizes(paths) -> set:
    """The set of (height, width) of the images; decodes those whose header is unusual."""
    found = set()
    for path in paths:
        size = image_size(path)
        if size is None:
            size = tuple(decode(path).shape[:2])
        found.add(size)
    return found


def decode(path):
    """RGB uint8 (h, w, 3) of one image file, with a clear error for a file that is not one."""
    try:
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(f"{path} is not an image TensorFlow can decode ({e.message}); remove "
                         "it from the folder tree.") from None


def dataset(paths, labels) -> tf.data.Dataset:
    """(image uint8 (h, w, 3), label int64) in the given order."""
    def read(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((list(paths), tf.constant(labels, tf.int64)))
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
