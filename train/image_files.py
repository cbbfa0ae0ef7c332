"""One image file: what it is, whether it is usable, its pixels upright.

`check` reads a file's header and its end (JPEG EOI, PNG IEND, GIF trailer, BMP size); only a
file failing that gets TensorFlow's full decode as the arbiter. Measured on a 12 MP JPEG: full
decode 58 ms, PIL's 1/8 draft decode 28 ms, header + end 0.006 ms; TensorFlow rejects a JPEG
cut in half, which the end check finds. Damage inside the data of a file whose ends are intact
passes the check. JPEG EXIF orientation (2-8) is read from the header and applied where decoded
(`orient`); the sizes `check` gives are upright. PNG, JPEG, GIF, BMP decode in the tf.data
graph; WebP and TIFF (which TensorFlow does not read) are decoded by PIL (`pil_read`), into a
PNG copy (`png_copy`) for a pipeline. HEIC is named and refused (convert to JPEG).
"""

import os
import struct

import numpy as np
import tensorflow as tf

VIA_PIL = ("webp", "tiff")
"""Formats TensorFlow does not decode: read by PIL, into PNG copies for a pipeline."""


def check(path: str, size: int | None = None) -> tuple:
    """(format, upright height, upright width, EXIF orientation, reason): reason '' for a
    usable image, else why it is not one. Reads the header and the file's end; decodes fully
    only when the end looks wrong. WebP/TIFF come back with size 0 x 0: `png_copy` decodes
    (and so checks) them."""
    size = os.path.getsize(path) if size is None else size
    if size == 0:
        return "", 0, 0, 1, "empty file (0 bytes)"
    try:
        with open(path, "rb") as f:
            head = f.read(128 * 1024)
            f.seek(-min(size, 16), os.SEEK_END)
            tail = f.read()
    except OSError as e:
        return "", 0, 0, 1, f"cannot be read ({e.strerror})"
    fmt, hw, orientation = _sniff(head)
    if fmt is None:
        kind = "HEIC/HEIF, not supported: convert to JPEG" if head[4:12] in (
            b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc") else f"starts with {head[:8]!r}"
        return "", 0, 0, 1, f"not an image TensorFlow or PIL reads ({kind})"
    if fmt in VIA_PIL:
        return fmt, 0, 0, 1, ""  # decoded (and so checked) by png_copy
    ends = {"jpeg": tail.rstrip(b"\0").endswith(b"\xff\xd9"),
            "png": tail[-8:] == b"IEND\xaeB`\x82", "gif": tail.endswith(b";"),
            "bmp": len(head) >= 6 and struct.unpack("<I", head[2:6])[0] <= size}[fmt]
    if hw is None or not ends:
        try:
            hw = tuple(tf_decode(tf.io.read_file(path)).shape[:2])
        except tf.errors.InvalidArgumentError as e:
            said = e.message.split("}}")[-1].split("[Op:")[0].strip()
            return fmt, 0, 0, 1, f"does not decode ({fmt}, {size} bytes: {said})"
    h, w = hw
    return fmt, *((w, h) if orientation >= 5 else (h, w)), orientation, ""


def _sniff(head):
    """(format, (h, w) as stored or None, EXIF orientation) from a file's first bytes."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return "png", (h, w), 1
    if head[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", head[6:10])
        return "gif", (h, w), 1
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return "bmp", (abs(h), w), 1
    if head[:3] == b"\xff\xd8\xff":
        return ("jpeg", *_jpeg_header(head))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", None, 1
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "tiff", None, 1
    return None, None, 1


def _jpeg_header(head):
    """((h, w) or None, orientation) walking the markers to the first start-of-frame."""
    pos, orientation = 2, 1
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None, orientation
        kind = head[pos + 1]
        if kind in (0xD8, 0x01, 0xFF) or 0xD0 <= kind <= 0xD7:
            pos += 1 if kind == 0xFF else 2
            continue
        length = struct.unpack(">H", head[pos + 2:pos + 4])[0]
        if kind == 0xE1 and head[pos + 4:pos + 10] == b"Exif\0\0":
            orientation = _exif_orientation(head[pos + 10:pos + 2 + length])
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(head):
            h, w = struct.unpack(">HH", head[pos + 5:pos + 9])
            return (h, w), orientation
        pos += 2 + length
    return None, orientation


def _exif_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 of an EXIF TIFF block, 1 when absent or out of range."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
            tag, kind, _, value = struct.unpack(order + "HHI4s", entry)
            if tag == 0x0112:
                v = struct.unpack(order + "H", value[:2])[0]
                return v if 1 <= v <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


def png_copy(path: str, fmt: str, out: str) -> tuple:
    """(height, width, reason) of decoding `path` (a `fmt` file, WebP/TIFF) once with PIL,
    orientation applied, into the PNG `out`; (0, 0, why) where it does not decode."""
    try:
        pixels = pil_read(path)
    except Exception as e:  # noqa: BLE001  PIL raises many kinds for a broken file
        return 0, 0, f"does not decode ({fmt}: {e})"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tf.io.write_file(out + ".tmp", tf.io.encode_png(pixels))
    os.replace(out + ".tmp", out)
    return *pixels.shape[:2], ""


def pil_read(path: str) -> np.ndarray:
    """uint8 (h, w, 3) RGB of any image PIL reads, EXIF orientation applied; 16-bit samples are
    scaled to 8 bits."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, np.float64)
            return np.repeat(np.round(a * 255 / (65535 if a.max() > 255 else 255)).clip(
                0, 255).astype(np.uint8)[..., None], 3, -1)
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------- decoding


def orient(image, orientation):
    """The upright image of one stored with EXIF `orientation` (1..8), as PIL's
    `ImageOps.exif_transpose` makes it: transpose for 5-8, then reverse the rows for 3, 4, 7, 8
    and the columns for 2, 3, 6, 7 (no control flow: one graph for every file). image: (h, w, C).
    """
    o, channels = tf.cast(orientation, tf.int32), image.shape[-1]
    transposed = (o >= 5) & (o <= 8)
    image = tf.transpose(image, tf.where(transposed, [1, 0, 2], [0, 1, 2]))
    rows = tf.reduce_any(tf.equal(o, [3, 4, 7, 8]))
    cols = tf.reduce_any(tf.equal(o, [2, 3, 6, 7]))
    image = tf.reverse(image, tf.boolean_mask([0, 1], tf.stack([rows, cols])))
    image.set_shape([None, None, channels])
    return image


def tf_decode(data, channels=3):
    """uint8 (h, w, channels) of encoded PNG/JPEG/GIF/BMP bytes, as stored (no EXIF); a GIF's
    first frame."""
    return tf.io.decode_image(data, channels=channels, expand_animations=False)


def read_upright(path, orientation, channels=3):
    """uint8 (h, w, channels) of the PNG/JPEG/GIF/BMP file at `path` (a string tensor in a
    tf.data map), turned upright by its EXIF `orientation`: what every folder reader decodes."""
    return orient(tf_decode(tf.io.read_file(path), channels), orientation)


def decode(path: str, channels: int = 3):
    """uint8 (h, w, channels) of one image file, upright (EXIF), WebP and TIFF too; a clear
    error for a file that is not an image."""
    fmt, _, _, orientation, reason = check(path)
    if reason:
        raise ValueError(f"{path} is not a usable image: {reason}.")
    if fmt in VIA_PIL:
        image = tf.constant(pil_read(path))
        return image if channels == 3 else tf.image.rgb_to_grayscale(image)
    return read_upright(path, orientation, channels)
