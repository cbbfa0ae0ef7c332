"""Class-per-folder trees of handwritten digits for the fine-tuning check of issue 21, offline.

    python results/finetune-digits/make_folders.py OUT

Data of another kind than the tests' (Fashion-MNIST clothes): scikit-learn's bundled 8x8 UCI
handwritten digits (`sklearn.datasets.load_digits`, 1,797 images, no download), upscaled to
64x64 (bicubic) and saved as JPEG, the way a user has image files. scikit-learn is not a
dependency of the project: `pip install scikit-learn` first.

- OUT/d6to4: the main split. source/ digits 0-5 (the source task): 150 images a class to train
  on (900), the rest of each class (26-33) to test the source model on. target/ digits 6-9, never
  seen by the source: 10 images a class to train on (40), every other image of 6-9 (674) to test
  on. Six source classes and four target ones, as in the tests (Fashion-MNIST 0-5 -> 6-9): the
  source's classifier is dropped and the head starts at initialization.
- OUT/d5to5: source/ digits 0-4 (150 a class; the rest to test), target/ digits 5-9 (10 a class;
  846 to test). Five classes each: the loader keeps a classifier whose class count matches, so
  the fine-tuning starts from the source's head for other classes (a pitfall, measured).
The images are shuffled once with seed 0 before each class is split, so the splits are fixed.
"""

import os
import sys

import numpy as np
from PIL import Image


def write(root, images, labels, classes, start, stop=None):
    """Writes images [start:stop] of each class in `classes` to root/<digit>/<index>.jpg
    (64x64 grayscale JPEG, quality 90); returns how many."""
    n = 0
    for c in classes:
        folder = os.path.join(root, str(c))
        os.makedirs(folder, exist_ok=True)
        for i in np.flatnonzero(labels == c)[start:stop]:
            img = Image.fromarray(images[i]).resize((64, 64), Image.BICUBIC)
            img.save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)
            n += 1
    return n


def main(out):
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
    order = np.random.default_rng(0).permutation(len(digits.target))
    images, labels = images[order], digits.target[order]
    counts = {}
    for name, source, target in (("d6to4", range(6), range(6, 10)),
                                 ("d5to5", range(5), range(5, 10))):
        for split, classes, start, stop in (("source/train", source, 0, 150),
                                            ("source/test", source, 150, None),
                                            ("target/train", target, 0, 10),
                                            ("target/test", target, 10, None)):
            counts[f"{name}/{split}"] = write(f"{out}/{name}/{split}", images, labels, classes,
                                              start, stop)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main(sys.argv[1])
