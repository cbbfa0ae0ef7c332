"""Class-per-folder trees of real images for the fine-tuning result (issue 21), offline.

    python results/finetune-photos/make_folders.py OUT

Fashion-MNIST (Debian's dataset-fashion-mnist IDX files) written as image files the way a user
has them: a source tree of classes 0-5 (the task the source model is trained on), a target tree
of the unseen classes 6-9 with few training images per class and a separate test split, and a
second target of another kind: scikit-learn's bundled 8x8 handwritten digits (UCI), upscaled,
saved as JPEG, when scikit-learn is installed. And `new_photos`: other test images of classes
6-9 as a phone leaves them, for `python -m export.evaluate`: JPEG at 96x96, every third one
stored sideways with EXIF Orientation 6 (upright once the tag is applied), a `__MACOSX/` folder
and a truncated JPEG beside them.
"""

import gzip
import os
import sys

import numpy as np
from PIL import Image

FASHION = "/usr/share/datasets/fashion-mnist"
NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle_boot")


def idx(name):
    with gzip.open(os.path.join(FASHION, name)) as f:
        data = f.read()
    if name.find("labels") >= 0:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


def write(root, images, labels, classes, per_class, names, ext="png", size=None, start=0):
    """Writes the first `per_class` images of each class (after `start` of them) to
    root/<name>/<i>.<ext>."""
    for c in classes:
        folder = os.path.join(root, names[c])
        os.makedirs(folder, exist_ok=True)
        chosen = np.flatnonzero(labels == c)[start:start + per_class]
        for i in chosen:
            img = Image.fromarray(images[i])
            if size:
                img = img.resize((size, size), Image.BICUBIC)
            img.save(os.path.join(folder, f"{i}.{ext}"))


def write_phone_photos(root, images, labels, classes, per_class, start):
    """JPEGs at 96x96; every third stored rotated with EXIF Orientation 6; Mac junk; one broken."""
    for c in classes:
        folder = os.path.join(root, NAMES[c])
        os.makedirs(folder, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(labels == c)[start:start + per_class]):
            img = Image.fromarray(images[i]).convert("RGB").resize((96, 96), Image.BICUBIC)
            exif = Image.Exif()
            if k % 3 == 0:  # the sensor's pixels, turned; the tag says how to show them
                img, exif[0x0112] = img.transpose(Image.Transpose.ROTATE_90), 6
            img.save(os.path.join(folder, f"IMG_{i:05d}.jpg"), quality=90, exif=exif)
    os.makedirs(os.path.join(root, "__MACOSX", NAMES[classes[0]]), exist_ok=True)
    with open(os.path.join(root, "__MACOSX", NAMES[classes[0]], "._IMG_0.jpg"), "wb") as f:
        f.write(b"\x00\x05\x16\x07" + bytes(60))
    whole = open(os.path.join(folder, f"IMG_{i:05d}.jpg"), "rb").read()
    with open(os.path.join(folder, "IMG_broken.jpg"), "wb") as f:
        f.write(whole[:len(whole) // 2])


def main(out):
    x_train, y_train = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    x_test, y_test = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    # Source task: classes 0-5, 1,000 training images each, 200 test images each.
    write(f"{out}/source/train", x_train, y_train, range(6), 1000, NAMES)
    write(f"{out}/source/test", x_test, y_test, range(6), 200, NAMES)
    # Target: unseen classes 6-9, 20 photos per class to learn from, 250 to judge on.
    write(f"{out}/target/train", x_train, y_train, range(6, 10), 20, NAMES)
    write(f"{out}/target/test", x_test, y_test, range(6, 10), 250, NAMES)
    write_phone_photos(f"{out}/new_photos", x_test, y_test, list(range(6, 10)), 100, 250)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("scikit-learn not installed: no digits target")
        return
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    labels = digits.target
    names = tuple(str(d) for d in range(10))
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    write(f"{out}/digits/train", images, labels, range(10), 10, names, "jpg", 64)
    write(f"{out}/digits/test", images, labels, range(10), 80, names, "jpg", 64, start=10)


if __name__ == "__main__":
    main(sys.argv[1])
