"""Fashion-MNIST offline: prepared for TFDS from Debian's `dataset-fashion-mnist` files.

Debian's files differ from the upstream downloads only in their 10-byte gzip header (Debian
dropped the embedded file name and reset the timestamp); the deflate streams are equal. Copies
with upstream's header go into a temporary manual dir, and TFDS prepares `fashion_mnist` from
there, verifying its own recorded sizes and SHA-256 (no `register_checksums`).
"""

import contextlib
import io
import os
import shutil
import struct
import tempfile

import tensorflow_datasets as tfds
from absl import logging

from train.rundir import file_lock

FASHION_MNIST_SOURCE = "/usr/share/datasets/fashion-mnist"

# Upstream gzip headers of the Fashion-MNIST files: FNAME flag, original name, mtime.
_FASHION_MNIST_MTIME = {"train": 1504176606, "t10k": 1504176627}
_FASHION_MNIST_FILES = tuple(
    f"{part}-{kind}-ubyte.gz"
    for part in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)


def _upstream_gzip(data: bytes, file_name: str) -> bytes:
    """Debian's .gz bytes with the 10-byte header upstream had (the deflate stream is equal)."""
    mtime = _FASHION_MNIST_MTIME[file_name.split("-")[0]]
    original = file_name[: -len(".gz")].encode() + b"\0"
    header = data[:3] + bytes([0x08]) + struct.pack("<I", mtime) + data[8:10]
    return header + original + data[10:]


def prepare(data_dir: str, source_dir: str = FASHION_MNIST_SOURCE) -> str:
    """Prepares TFDS `fashion_mnist` offline from Debian's IDX files; returns the data_dir.

    Debian's files differ from upstream's only in the gzip header. Copies with upstream's
    header go into a temporary manual dir, and TFDS prepares from there, verifying its own
    recorded sizes and SHA-256 (no `register_checksums`). Idempotent; a file lock keeps two
    processes from preparing at once, and TFDS moves the finished dataset into place.
    """
    data_dir = os.path.expanduser(data_dir)
    with quiet_tfds():
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
    if logging.get_verbosity() < logging.INFO:
        print(f"Preparing Fashion-MNIST in {data_dir} from {source_dir} (first run only) ...",
              flush=True)
    with file_lock(os.path.join(data_dir, ".fashion_mnist.lock")), quiet_tfds():
        if builder.is_prepared():  # another process finished while we waited
            return data_dir
        logging.info("Preparing fashion_mnist in %s from %s", data_dir, source_dir)
        half_made = builder.data_dir  # <data_dir>/fashion_mnist/<version>, left by a killed run
        if os.path.isdir(half_made) and not os.path.isfile(
                os.path.join(half_made, "dataset_info.json")):
            shutil.rmtree(half_made)  # else TFDS "reuses" it and the splits stay empty
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





@contextlib.contextmanager
def quiet_tfds():
    """Under the CLIs' quiet default (absl below INFO), TFDS's own lines while it prepares
    (its 'Downloading and preparing' banner on stdout, WARNINGs about half-made variant
    folders that the preparation replaces) stay off the terminal; errors still raise."""
    if logging.get_verbosity() >= logging.INFO:
        yield
        return
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.set_verbosity(level)
