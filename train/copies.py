"""Copies of a folder's images that the pipeline reads instead of the user's files, made once
into the cache next to the folder's manifest (`train.folders`):

- WebP and TIFF, which TensorFlow does not decode: a PNG copy decoded by PIL, orientation
  applied (`image_files.png_copy`).
- Large photos (upright shorter side over 2 * WORKING_SIDE, e.g. a phone's 4032x3024): a JPEG
  copy, upright, shorter side WORKING_SIDE (antialiased resize, quality COPY_QUALITY), made by
  PIL in threads (31 ms a 12 MP photo on 2 cores; TensorFlow's ops ran them one by one under a
  deterministic run's single inter-op thread, 55-67 ms, and would start its runtime early).

Why the photo copies: most of the time of decoding a phone JPEG is its entropy decoding, which no
downscaled or windowed decode avoids (measured on a 12 MP, 5 MB JPEG on this project's 2-core
machine: full decode 64 ms, `decode_jpeg(ratio=8)` 42 ms). A 224-pixel fine-tune reads each
photo once an epoch: 3,200 photos x 8 epochs x 64 ms is 27 CPU-minutes of decoding alone. Its
512-pixel copy decodes in about 3 ms. A random-resized crop of at least a quarter of the copy
still has 256 pixels a side, at least the 224 it is resized to; ImageNet itself, on which the
weights were trained, has images of about 400x350. Every reader of a folder (training,
evaluation, export's calibration and verification, `export.evaluate`) reads the same copies,
so all of them see the same pixels.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import keras
from absl import logging

from train.image_files import VIA_PIL, png_copy

WORKING_SIDE = 512
"""Shorter side of a large photo's working copy, in pixels (see the module docstring)."""
COPY_QUALITY = 95
"""JPEG quality of the working copies: differences from the resized original of a few grey
levels, far below what a random-resized crop and colour of a photo vary by."""


def kind(fact) -> str:
    """'png' (WebP/TIFF), 'photo' (a large photo) or '' (read as it is) for a usable file's
    manifest fact (fmt, upright h, upright w, orientation, stat, reason)."""
    fmt, h, w, reason = fact[0], fact[1], fact[2], fact[5]
    if reason:
        return ""
    if fmt in VIA_PIL:
        return "png"
    return "photo" if min(h, w) > 2 * WORKING_SIDE else ""


def path(folder_cache: str, rel: str, fact) -> str:
    """Where the copy of `rel` (with its manifest fact) lives under `folder_cache`, the
    folder's cache directory; keyed by path, size and mtime, so a changed file gets a new one."""
    key = hashlib.sha256(f"{rel}|{fact[4][0]}|{fact[4][1]}".encode()).hexdigest()[:24]
    sub, ext = ("png", ".png") if kind(fact) == "png" else ("photos", ".jpg")
    return os.path.join(folder_cache, sub, key + ext)


def working_size(h: int, w: int) -> tuple:
    """(h, w) of the working copy of an upright h x w photo: shorter side WORKING_SIDE."""
    scale = WORKING_SIDE / min(h, w)
    return max(round(h * scale), WORKING_SIDE), max(round(w * scale), WORKING_SIDE)


def read_size(fact) -> tuple:
    """(h, w) of what the pipeline reads for a file: its copy's size where it has one."""
    return working_size(fact[1], fact[2]) if kind(fact) == "photo" else (fact[1], fact[2])


def make_png(root: str, rel: str, fact, folder_cache: str):
    """The fact of a WebP/TIFF with its size once decoded into its PNG copy, or with the reason
    it does not decode."""
    h, w, reason = png_copy(os.path.join(root, rel), fact[0], path(folder_cache, rel, fact))
    return (fact[0], h, w, 1, fact[4], reason)


def _photo_copy(source: str, out: str) -> str:
    """Writes the upright working copy of the photo `source` to `out`; '' or why it failed.
    PIL decodes at the smallest JPEG DCT scale (1/2, 1/4, 1/8) that keeps at least twice the
    working size (`draft`), so the antialiased resize after it still averages."""
    from PIL import Image, ImageOps

    try:
        with Image.open(source) as im:
            w, h = im.size
            scale = 2 * WORKING_SIDE / min(w, h)
            im.draft("RGB", (round(w * scale), round(h * scale)))
            im = ImageOps.exif_transpose(im.convert("RGB"))
            size = working_size(im.height, im.width)
            im = im.resize((size[1], size[0]), Image.BILINEAR)  # reducing: antialiased
            im.save(out + ".tmp", "JPEG", quality=COPY_QUALITY)
        os.replace(out + ".tmp", out)
        return ""
    except Exception as e:  # noqa: BLE001  PIL raises many kinds for a broken file
        return f"does not decode ({type(e).__name__}: {e})"


def make_photos(root: str, jobs, folder_cache: str) -> dict:
    """Writes the working copies of `jobs` ([(rel, fact)], large photos) on every core (PIL
    releases the GIL), with a progress bar; returns {rel: reason}: '' for each copy made, else
    why the file does not decode."""
    if not jobs:
        return {}
    logging.info("Making %d working copies (shorter side %d) of large photos in %s (once)",
                 len(jobs), WORKING_SIDE, folder_cache)
    os.makedirs(os.path.join(folder_cache, "photos"), exist_ok=True)
    bar = keras.utils.Progbar(len(jobs), unit_name="photo") if len(jobs) >= 50 else None
    reasons = {}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        done = pool.map(lambda job: _photo_copy(os.path.join(root, job[0]),
                                                path(folder_cache, *job)), jobs)
        for (rel, _), reason in zip(jobs, done):
            reasons[rel] = reason
            if bar and len(reasons) % 25 == 0:
                bar.update(len(reasons))
    if bar:
        bar.update(len(reasons), finalize=True)
    return reasons
