"""Copies of a folder's images that the pipeline reads instead of the user's files, made once
into the cache next to the folder's manifest (`train.folders`):

- WebP and TIFF, which TensorFlow does not decode: a PNG copy decoded by PIL, orientation
  applied (`image_files.png_copy`).
- Large photos (upright shorter side over 2 * WORKING_SIDE, e.g. a phone's 4032x3024): a JPEG
  copy, upright, shorter side WORKING_SIDE (antialiased resize, quality COPY_QUALITY).

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

import keras
import tensorflow as tf
from absl import logging

from train.image_files import VIA_PIL, orient, png_copy, tf_decode

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


def _ratio(fmt: str, h: int, w: int) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps the decode at least 2x the working
    size, so the antialiased resize after it still averages (other formats: 1)."""
    if fmt != "jpeg":
        return 1
    return max(r for r in (1, 2, 4, 8) if r == 1 or min(h, w) // r >= 2 * WORKING_SIDE)


def make_photos(root: str, jobs, folder_cache: str) -> dict:
    """Writes the working copies of `jobs` ([(rel, fact)], large photos) in a parallel tf.data
    map over every core, with a progress bar; returns {rel: reason} for files that turned out
    not to decode ('' for each copy made)."""
    if not jobs:
        return {}
    logging.info("Making %d working copies (shorter side %d) of large photos in %s (once)",
                 len(jobs), WORKING_SIDE, folder_cache)
    os.makedirs(os.path.join(folder_cache, "photos"), exist_ok=True)
    groups = {}
    for i, (_, fact) in enumerate(jobs):
        groups.setdefault(_ratio(fact[0], fact[1], fact[2]), []).append(i)
    done = {}
    bar = keras.utils.Progbar(len(jobs), unit_name="photo") if len(jobs) >= 50 else None
    for ratio, members in sorted(groups.items()):
        for i in _copy_stream(root, [jobs[i] for i in members], members, ratio, folder_cache):
            done[int(i)] = ""
            if bar and len(done) % 25 == 0:
                bar.update(len(done))
    if bar:
        bar.update(len(done), finalize=True)
    return {rel: done.get(i, "does not decode (inside its compressed data)")
            for i, (rel, _) in enumerate(jobs)}


def _copy_stream(root, jobs, indices, ratio, folder_cache):
    """Yields the index of each job whose copy was written; a file that fails to decode is
    dropped (its index never comes)."""
    sources = [os.path.join(root, rel) for rel, _ in jobs]
    outs = [path(folder_cache, rel, fact) for rel, fact in jobs]
    sizes = [working_size(fact[1], fact[2]) for _, fact in jobs]
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(indices, tf.int64), sources, outs,
        tf.constant([fact[3] for _, fact in jobs], tf.int32), tf.constant(sizes, tf.int32)))

    @tf.autograph.experimental.do_not_convert  # no Python control flow: no source re-read
    def copy(i, source, out, orientation, size):
        data = tf.io.read_file(source)
        pixels = (tf.io.decode_jpeg(data, channels=3, ratio=ratio) if ratio > 1
                  else tf_decode(data))
        pixels = tf.image.resize(orient(pixels, orientation), size, antialias=True)
        encoded = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255),
                                            tf.uint8), quality=COPY_QUALITY)
        tf.io.write_file(tf.strings.join([out, ".tmp"]), encoded)
        return i, out

    ds = ds.map(copy, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    for i, out in ds.ignore_errors().as_numpy_iterator():
        os.replace(out.decode() + ".tmp", out.decode())
        yield i
