"""Class-per-folder image trees as users have them: the one set of rules every reader uses.

Layout: `root/<split>/<class>/...` when a top folder named train, test, val or validation holds
class folders (every top folder is then a split), else `root/<class>/...`; images below a
class folder count at any depth. Classes: the sorted union over the splits of the folders
holding a usable image.
- Ignored and counted (`Tree.ignored`): `__MACOSX/`, `._*`, `.DS_Store`, `Thumbs.db`,
  `desktop.ini`, any hidden file or folder (`.ipynb_checkpoints/`), non-image files, images
  outside a class folder.
- Skipped before the first step and named (`Tree.skipped`; an error with bad_images='fail'):
  empty, truncated or undecodable files, files that are no image (HEIC: convert to JPEG).
- Each file is judged by `train.image_files.check` (header and end, a full decode only where
  those look wrong; JPEG EXIF orientation applied, sizes upright). PNG, JPEG, GIF, BMP decode
  in the tf.data graph; WebP and TIFF (which TensorFlow does not read) and large photos (a
  phone's 12 MP) are read from copies made once in the cache (`train.copies`: PNG by PIL;
  upright JPEG with a 512-pixel shorter side).
- A tree without a test/val/validation split gets a held-out 'test' part: per class the first
  round(holdout * n) files in `order_key` order (default 0.2; a class of one stays in 'train').

Damage inside the data of a file whose ends are intact passes the check; the pipeline drops
such an image with a logged warning (`dataset`), never stopping a run. Outcomes are kept in a
manifest keyed by path, size and mtime in the Keras cache dir (`manifest_path`; not in the
user's tree, which may be read-only or shared), so an unchanged tree is not read again.
Examples come in one fixed shuffled order (`order_key`).
"""

import dataclasses
import gc
import hashlib
import json
import os
from typing import NamedTuple

import keras
import tensorflow as tf
from absl import logging

from train import copies
from train.image_files import check, read_upright

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "test", "val", "validation")
TEST_SPLITS = ("test", "val", "validation")
SYSTEM_NAMES = ("__macosx", "thumbs.db", "desktop.ini", "ehthumbs.db", "$recycle.bin")
DEFAULT_HOLDOUT = 0.2
"""Held-out fraction of a tree without a test split: the 80/20 of Ultralytics and Model Maker."""
_MANIFEST_VERSION = 1


class Image(NamedTuple):
    """One usable image: `path` relative to root ('/'), upright size, where its pixels are read."""

    path: str
    label: int
    fmt: str
    height: int
    width: int
    orientation: int  # EXIF 1..8 (1: as stored)
    read: str  # absolute path the pipeline reads (a PNG copy for WebP/TIFF)


class Left(NamedTuple):
    """A file left out and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class Tree:
    """The outcome of `scan`: classes, each split's images in order, what was left out.

    splits: split name -> tuple of `Image` in order; held_out: paths `scan` moved into 'test';
    holdout: the fraction held out, None when the tree has a test split of its own;
    checked, cached: files read by this scan, files whose outcome the manifest held.
    """

    root: str
    class_names: tuple
    splits: dict
    skipped: tuple
    ignored: tuple
    held_out: tuple
    holdout: float | None
    checked: int
    cached: int

    @property
    def split_made(self) -> bool:
        return self.holdout is not None

    def resolve(self, base: str) -> str:
        """The split name `base` ('train', 'test', or a folder's name) reads."""
        try:
            return choose_split(base, self.splits, TEST_SPLITS, self.root)
        except ValueError as e:
            if not self.split_made:
                raise
            raise ValueError(f"{e} The tree has no test split and too few images to hold one "
                             "out (a class of one image stays in 'train'): add images or a "
                             "test/ folder.") from None


def scan(root: str, *, holdout: float | None = None, bad_images: str = "skip",
         cache_dir: str | None = None) -> Tree:
    """Walks, checks (or recalls) and splits `root`; see the module docstring for the rules."""
    enabled = gc.isenabled()
    gc.disable()  # a scan makes ~10 objects per file: collections would walk all TF's objects
    try:
        return _scan(root, holdout, bad_images, cache_dir)
    finally:
        if enabled:
            gc.enable()


def _scan(root, holdout, bad_images, cache_dir):
    if bad_images not in ("skip", "fail"):
        raise ValueError(f"bad_images={bad_images!r}: use 'skip' (leave broken images out, "
                         "with a warning) or 'fail' (stop and list them).")
    holdout = DEFAULT_HOLDOUT if holdout is None else float(holdout)
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout}: give the held-out fraction, between 0 and 1 "
                         "(e.g. 0.2).")
    if not os.path.isdir(root):
        raise ValueError(f"folder dataset root {root!r} is not a directory: pass "
                         "folder:/path/to/root with root/<class>/<images> or "
                         "root/<split>/<class>/<images>.")
    walked = found, ignored = _walk(root)
    memo = (root, holdout, cache_dir)
    if _LAST.get(memo, (None,))[0] == walked:  # unchanged since this process's last scan
        return _checked(_LAST[memo][1], bad_images)
    layout_split = any(len(p) > 2 and p[0].lower() in SPLIT_NAMES for p, _ in found)
    depth = 3 if layout_split else 2
    ignored = ignored + [Left(r, "not in a class folder") for p, (r, _) in found if len(p) < depth]
    found = [(p, s) for p, s in found if len(p) >= depth]
    manifest = manifest_path(root, cache_dir)
    folder = os.path.dirname(manifest)  # the folder's cache: its manifest and copies
    facts, checked, cached = _check_all(root, [(rel, st) for _, (rel, st) in found], manifest)
    skipped = [Left(rel, facts[rel][5]) for _, (rel, _) in found if facts[rel][5]]
    if skipped and bad_images == "fail":
        _checked(Tree(root, (), {}, tuple(skipped), (), (), None, 0, 0), bad_images)
    good = [(p, rel) for p, (rel, _) in found if not facts[rel][5]]
    groups = {}  # (split, class) -> [(key, rel)]
    for p, rel in good:
        split, name = (_split_name(p[0]), p[1]) if layout_split else ("train", p[0])
        inner = "/".join(p[depth - 1:])
        groups.setdefault((split, name), []).append((order_key(name, inner), rel))
    if not groups:
        raise ValueError(f"{root} holds no usable images ({', '.join(EXTENSIONS)}) in class "
                         f"folders; {len(skipped)} skipped, {len(ignored)} other files ignored.")
    names = tuple(sorted({name for _, name in groups}))
    labels = {name: k for k, name in enumerate(names)}
    if any(s.lower() in TEST_SPLITS for s, _ in groups):
        held, made = [], None
    else:
        groups, held = _hold_out(groups, holdout)
        made = holdout
    splits = {}
    for (split, name), members in sorted(groups.items()):
        for key, rel in members:
            splits.setdefault(split, []).append(
                (key, _image(root, rel, labels[name], facts[rel], folder)))
    splits = {s: tuple(im for _, im in sorted(v)) for s, v in splits.items()}
    tree = Tree(root, names, splits, tuple(skipped), tuple(ignored), tuple(sorted(held)), made,
                checked, cached)
    _LAST[memo] = (walked, tree)
    return tree


_LAST = {}  # (root, holdout, cache_dir) -> ((walk), Tree): a second load in one process


def _checked(tree, bad_images):
    """`tree`, or the error bad_images='fail' asks for when it skipped images."""
    if tree.skipped and bad_images == "fail":
        raise ValueError(f"{len(tree.skipped)} broken image(s) in {tree.root} (bad_images="
                         "'fail'): " + "; ".join(f"{s.path}: {s.reason}" for s in tree.skipped[:20])
                         + (" ..." if len(tree.skipped) > 20 else "")
                         + ". Remove or replace them, or use bad_images='skip'.")
    return tree


def _split_name(folder: str) -> str:
    return folder.lower() if folder.lower() in SPLIT_NAMES else folder


def _hold_out(groups, holdout):
    """Per class, the first round(holdout * n) files in hash order (at least one, never all)
    become 'test'; the rest 'train'. Deterministic and stratified."""
    out, held = {}, []
    for (split, name), members in groups.items():
        if split.lower() != "train":
            out[(split, name)] = members
            continue
        members = sorted(members)
        n = len(members)
        k = min(max(round(holdout * n), 1), n - 1) if n > 1 else 0
        out[("test", name)], out[("train", name)] = members[:k], members[k:]
        held += [rel for _, rel in members[:k]]
    return {k: v for k, v in out.items() if v}, held


def _image(root, rel, label, fact, folder):
    """The `Image` of a usable file: its copy (upright) where `train.copies` makes one."""
    fmt, orientation = fact[0], fact[3]
    if copies.kind(fact):
        read, orientation = copies.path(folder, rel, fact), 1
    else:
        read = f"{root}{os.sep}{rel}"
    return Image(rel, label, fmt, *copies.read_size(fact), orientation if fmt == "jpeg" else 1,
                 read)


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def _walk(root):
    """([(parts, (relpath, (size, mtime_ns)))] of image-named files, [Left] ignored files)."""
    found, ignored = [], []
    stack = [()]
    while stack:
        parts = stack.pop()
        with os.scandir(os.path.join(root, *parts)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            p = (*parts, e.name)
            if e.is_dir(follow_symlinks=True):
                if _is_junk(e.name):
                    ignored += [Left(r, "system or hidden") for r in _all_files(root, p)]
                else:
                    stack.append(p)
                continue
            rel = "/".join(p)
            if _is_junk(e.name):
                ignored.append(Left(rel, "system or hidden"))
            elif not e.name.lower().endswith(EXTENSIONS):
                ignored.append(Left(rel, "not an image file"))
            else:
                st = e.stat()
                found.append((p, (rel, [st.st_size, st.st_mtime_ns])))
    found.sort(key=lambda f: f[1][0])
    return found, sorted(ignored)


def _all_files(root, parts):
    base = os.path.join(root, *parts)
    for d, _, fs in os.walk(base):
        rel = os.path.relpath(d, root).replace(os.sep, "/")
        yield from (f"{rel}/{f}" for f in fs)


# ------------------------------------------------------------------- checks and manifest


def cache_root(cache_dir: str | None = None) -> str:
    """Where manifests and PNG copies live: `cache_dir`, else $KERAS_HOME (or ~/.keras, or
    /tmp/.keras where that is not writable, as Keras does)/keras_resnet_folders."""
    if cache_dir:
        return cache_dir
    home = os.environ.get("KERAS_HOME") or os.path.expanduser(os.path.join("~", ".keras"))
    if not os.access(os.path.dirname(home) if not os.path.exists(home) else home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "keras_resnet_folders")


def manifest_path(root: str, cache_dir: str | None = None) -> str:
    key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(cache_root(cache_dir), key, "manifest.json")


def _check_all(root, files, path):
    """{relpath: (fmt, h, w, orientation, stat, reason)}, from the manifest at `path` where size
    and mtime still match; writes the manifest back when anything was read anew. Copies
    (`train.copies`) go beside the manifest."""
    folder, known = os.path.dirname(path), {}
    try:
        with open(path) as f:
            saved = json.load(f)
        if saved.get("version") == _MANIFEST_VERSION:
            known = saved["files"]  # rel -> [fmt, h, w, orientation, [size, mtime], reason]
    except (OSError, ValueError):
        pass
    facts, todo = {}, []
    for rel, stat in files:
        old = known.get(rel)
        if old is not None and old[4] == stat and (
                not copies.kind(old) or os.path.isfile(copies.path(folder, rel, old))):
            facts[rel] = old
        else:
            todo.append((rel, stat))
    if todo:
        logging.info("Checking %d images in %s (once: kept in %s)", len(todo), root, path)
        bar = keras.utils.Progbar(len(todo), unit_name="image") if len(todo) >= 2000 else None
        for i, (rel, stat) in enumerate(todo):
            full = os.path.join(root, rel)
            fmt, h, w, orientation, reason = check(full, stat[0])
            facts[rel] = (fmt, h, w, orientation, stat, reason)
            if copies.kind(facts[rel]) == "png":
                facts[rel] = copies.make_png(root, rel, facts[rel], folder)
            if bar and i % 500 == 0:
                bar.update(i)
        if bar:
            bar.update(len(todo), finalize=True)
        photos = [(rel, facts[rel]) for rel, _ in todo if copies.kind(facts[rel]) == "photo"]
        for rel, reason in copies.make_photos(root, photos, folder).items():
            if reason:
                facts[rel] = (*facts[rel][:5], reason)
    if todo or len(known) != len(facts):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"version": _MANIFEST_VERSION, "root": os.path.abspath(root),
                       "files": facts}, f, separators=(",", ":"))
        os.replace(tmp, path)
    return facts, len(todo), len(files) - len(todo)


# ------------------------------------------------------------------- copies and pipeline


def dataset(images) -> tf.data.Dataset:
    """(image uint8 (h, w, 3), label int64) of `Image`s, in the given order."""
    images = tuple(images)
    ds = tf.data.Dataset.from_tensor_slices((
        [im.read for im in images], tf.constant([im.label for im in images], tf.int64),
        tf.constant([im.orientation for im in images], tf.int32)))

    @tf.autograph.experimental.do_not_convert  # no Python control flow: no source re-read
    def read(path, label, orientation):
        return read_upright(path, orientation), label

    # Damage the check cannot see (inside the compressed data of a file whose ends are intact)
    # drops that image with a logged warning instead of stopping a run that has started.
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)


# ------------------------------------------------------------------- splits and order


def choose_split(base: str, available, test_names, name: str) -> str:
    """The split `base` names among `available`: 'test' falls back to the first of
    `test_names` that exists (a validation split), anything missing raises."""
    if base == "test" and "test" not in available:
        base = next((s for s in test_names if s in available), base)
    if base not in available:
        raise ValueError(f"split {base!r} does not exist in {name!r}: use 'train' or 'test' "
                         f"(available: {sorted(available)}).")
    return base


def order_key(class_name: str, path: str) -> str:
    """The sort key of an image in its split: SHA-256 of "class/path within the class folder",
    so every file's place is the same on every machine and adding an image moves no other."""
    return hashlib.sha256(f"{class_name}/{path}".encode()).hexdigest()
