"""A folder of phone photos for the folder-to-phone timing of issue 21, offline.

    python results/photos-to-phone/make_photos.py OUT [--count=4000] [--workers=2]
    python results/photos-to-phone/make_photos.py SOURCE --classes=0,1,2,3,4,5 --size=320x240

OUT/<class>/IMG_<n>.jpg, no split folders (the layout most users have), classes 6-9 of
Fashion-MNIST (shirt, sneaker, bag, ankle boot: classes the source model of
results/finetune-photos never saw), `count` photos in all, at phone-camera sizes: 60% 4032x3024
(12 MP; a third of those portrait, stored sideways with EXIF Orientation 6 as phones do), 25%
3264x2448 (8 MP), 15% 4000x2252 (16:9). Each photo: a smooth coloured background, the garment
upscaled to 35-75% of the shorter side in a random colour and place, sensor-like noise, JPEG
quality 92 (about 3 MB a photo: decode time like a camera's). Plus what a zipped Mac folder
holds: `__MACOSX/` with AppleDouble files, `.DS_Store`, and one photo cut short by a failed copy.
`--images=test`: garments of Fashion-MNIST's test part (new photos to judge a model on).
`--classes=0,...,5 --size=WxH`: the same kind of photos of other classes at one small size (the
source task of the photo-domain source model; no junk).
"""

import argparse
import gzip
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image

FASHION = "/usr/share/datasets/fashion-mnist"
ALL_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
             "bag", "ankle_boot")
NAMES = {c: ALL_NAMES[c] for c in (6, 7, 8, 9)}
SIZES = [(4032, 3024)] * 12 + [(3264, 2448)] * 5 + [(4000, 2252)] * 3  # (w, h) in turn


def fashion(part="train"):
    prefix = "train" if part == "train" else "t10k"
    with gzip.open(os.path.join(FASHION, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


_NOISE = None


def _noise(rng):
    global _NOISE
    if _NOISE is None:  # one tile of sensor-like noise, cut at random offsets (fast)
        _NOISE = rng.normal(0, 7, (4300, 4300, 3)).clip(-127, 127).astype(np.int8)
    return _NOISE


def photo(garment, seed, width, height, portrait):
    """uint8 (h, w, 3) upright photo of one 28x28 garment."""
    rng = np.random.default_rng(seed)
    if portrait:
        width, height = height, width
    background = Image.fromarray(rng.integers(40, 220, (3, 4, 3), dtype=np.uint8)).resize(
        (width, height), Image.BICUBIC)
    side = int(min(width, height) * rng.uniform(0.35, 0.75))
    mask = Image.fromarray(np.minimum(garment.astype(np.int32) * 3, 255).astype(np.uint8)).resize(
        (side, side), Image.BICUBIC)  # opaque garment, soft edges
    colour = rng.integers(0, 256, 3).astype(np.float32)
    shade = np.asarray(Image.fromarray(garment).resize((side, side), Image.BICUBIC), np.float32)
    item = Image.fromarray((colour * (0.35 + 0.65 * shade[..., None] / 255)).astype(np.uint8))
    x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    background.paste(item, (x, y), mask)
    noise = _noise(rng)
    oy = int(rng.integers(0, noise.shape[0] - height))
    ox = int(rng.integers(0, noise.shape[1] - width))
    pixels = np.asarray(background, np.int16) + noise[oy:oy + height, ox:ox + width]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write(job):
    out, index, garment, label, size = job
    width, height = size or SIZES[index % len(SIZES)]
    portrait = width == 4032 and index % 3 == 0
    img = Image.fromarray(photo(garment, index, width, height, portrait))
    exif = Image.Exif()
    if portrait:  # the sensor's landscape pixels; the tag says how to show them
        img, exif[0x0112] = img.transpose(Image.Transpose.ROTATE_90), 6
    folder = os.path.join(out, ALL_NAMES[label])
    img.save(os.path.join(folder, f"IMG_{index:05d}.jpg"), quality=92, exif=exif)
    return os.path.getsize(os.path.join(folder, f"IMG_{index:05d}.jpg"))


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--classes", default="6,7,8,9")
    parser.add_argument("--size", default=None, help="WxH of every photo (default: phone sizes)")
    parser.add_argument("--images", default="train", choices=("train", "test"),
                        help="Fashion-MNIST part the garments come from (test: never trained on)")
    args = parser.parse_args(argv)
    classes = [int(c) for c in args.classes.split(",")]
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    images, labels = fashion(args.images)
    per = args.count // len(classes)
    jobs, taken = [], {c: 0 for c in classes}
    for i in range(len(labels)):
        if labels[i] in taken and taken[labels[i]] < per:
            taken[labels[i]] += 1
            jobs.append((args.out, len(jobs), images[i], int(labels[i]), size))
    for c in classes:
        os.makedirs(os.path.join(args.out, ALL_NAMES[c]), exist_ok=True)
    with Pool(args.workers) as pool:
        sizes = pool.map(write, jobs, chunksize=16)
    if size:
        print(f"{len(jobs)} photos at {args.size} in {args.out}")
        return
    mac = os.path.join(args.out, "__MACOSX", "shirt")
    os.makedirs(mac, exist_ok=True)
    for name in os.listdir(os.path.join(args.out, "shirt"))[:20]:
        with open(os.path.join(mac, "._" + name), "wb") as f:
            f.write(b"\x00\x05\x16\x07" + bytes(80))
    with open(os.path.join(args.out, ".DS_Store"), "wb") as f:
        f.write(bytes(64))
    cut = os.path.join(args.out, "bag", "IMG_99999.jpg")  # a copy that failed halfway
    with open(os.path.join(args.out, "bag", sorted(os.listdir(os.path.join(args.out, "bag")))[0]),
              "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    print(f"{len(jobs)} photos in {args.out}: {sum(sizes) / 2**30:.2f} GiB, "
          f"{np.mean(sizes) / 2**20:.2f} MiB a photo; plus __MACOSX/, .DS_Store and a cut file")


if __name__ == "__main__":
    main(sys.argv[1:])
