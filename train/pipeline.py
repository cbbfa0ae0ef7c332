"""Input pipelines: batches of `(images float32 (B, H, W, C) in [0, 255], labels int32 (B,))`.

    examples = pipeline.prepare(ds, info, view, augment="cifar")
    train_ds = pipeline.train_batches(examples, batch_size=128, augment="cifar", seed=0)
    eval_ds = pipeline.eval_batches(examples, batch_size=500)

A split whose images fit in memory (`train.data.fits_in_memory`) is held as one uint8 array at
the view's size. Its training stream is a pure function of the step: batch s holds the images
at positions s*B .. s*B+B-1 of a sequence of epochs, each epoch a full permutation drawn from
(seed, epoch), augmented with a seed drawn from (seed, s). Nothing is decoded during training,
the data iterator's checkpoint is a counter, and a resumed run sees exactly the batches of an
uninterrupted one.

Everything else streams, and the iterator is checkpointed:
- A split with a per-image augmentation (`train.augment.PER_IMAGE`: 'imagenet',
  'random_resized_crop') always streams, whatever its size: the augmentation needs the decoded
  full-size image (full-resolution photos would not fit in memory anyway). Each image's
  augmentation is seeded from (seed, its position k in the stream), so epochs differ and reruns
  and resumed runs repeat.
- A folder (`DatasetInfo.folder`) is shuffled as a file list, before anything is decoded: the
  files of batch s are the positions of the in-memory order above (full permutations per
  epoch; `shuffle_buffer` plays no part), then read, decoded, EXIF-oriented
  (`train.image_files`), augmented or resized in a parallel map. Memory holds a few batches of
  decoded photos, and the first batch needs only its own images. An image that fails to decode
  is dropped with a logged warning, as `train.folders.dataset` drops it.
- A TFDS split too large for memory: a seeded shuffle buffer (`shuffle_buffer`) of decoded
  examples, then the per-image augmentation or the view's resize.
The batch augmentation ('cifar', 'flip', erasing) follows, seeded from (seed, batch).

Every random choice is stateless (no stateful RNG op, so `tf.train.Checkpoint` can save the
iterator). Evaluation applies `train.views.apply`, the one evaluation view.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from train import augment as augment_lib
from train import data, image_files, views
from train.augment import AUGMENTATIONS, PER_IMAGE

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class Examples:
    """One split ready for pipelines: its info and view, and either arrays (images uint8
    (N, h, w, C) after the view's resize, labels int32 (N,)) or the raw tf.data examples."""

    info: data.DatasetInfo
    view: views.View
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    dataset: tf.data.Dataset | None = None

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def __len__(self):
        return len(self.labels) if self.in_memory else int(self.info.num_examples or 0)


def prepare(ds, info, view, augment: str = "cifar") -> Examples:
    """`load`'s examples as arrays when they fit in memory and need no per-image augmentation
    (`PER_IMAGE`: those always stream, from the full-size images), else as a stream."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment {augment!r} is not one of {AUGMENTATIONS}.")
    if augment not in PER_IMAGE and data.fits_in_memory(info, view):
        images, labels = data.to_arrays(ds, view)
        return Examples(info, view, images, labels)
    return Examples(info, view, dataset=ds)


def _check_batch(batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


def _augment_batch(x, step, seed, augment, erasing):
    """Batch-level augmentation of float32 view outputs, seeded by (seed, step)."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 1], tf.int64), step)
    if augment in ("cifar", "flip"):
        x = augment_lib.cifar_batch(x, key, pad=4 if augment == "cifar" else 0)
    if erasing:
        x = augment_lib.erase_batch(x, tf.random.experimental.stateless_fold_in(key, 7), erasing)
    return x


def _permuted_indices(step, batch_size, n, seed):
    """Dataset positions of global batch `step`: epochs of full permutations (seed, epoch)."""
    k = tf.cast(step, tf.int64) * batch_size + tf.range(batch_size, dtype=tf.int64)
    epoch = k // n
    first = epoch[0]
    base = tf.constant([seed, 0], tf.int64)

    def permutation(e):
        key = tf.random.experimental.stateless_fold_in(base, e)
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), key)

    perms = tf.map_fn(permutation, tf.range(first, epoch[-1] + 1),
                      fn_output_signature=tf.TensorSpec([n], tf.int64))
    return tf.gather_nd(perms, tf.stack([epoch - first, k % n], axis=1))


def _memory_training(examples, batch_size, augment, seed, erasing, context):
    images, labels = tf.constant(examples.images), tf.constant(examples.labels)
    n, view = len(examples.labels), examples.view
    shard = slice(None)
    if context is not None:
        per = context.get_per_replica_batch_size(batch_size)
        i = context.input_pipeline_id
        shard = slice(i * per, (i + 1) * per)

    def batch(step):
        index = _permuted_indices(step, batch_size, n, seed)
        x = views.finish(tf.gather(images, index), view)
        x = _augment_batch(x, step, seed, augment, erasing)
        return x[shard], tf.gather(labels, index)[shard]

    return tf.data.Dataset.counter().map(batch, num_parallel_calls=AUTOTUNE)


def _image_key(seed, pipeline_id, k):
    """The seed (int64 (2,)) of the per-image augmentation of stream position `k`."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 2 + pipeline_id], tf.int64), k)


def _view_image(image, key, augment, view):
    """One decoded uint8 image (h, w, C) -> float32 at the view's inner size: the per-image
    augmentation `augment` when it is one, else the view's resize."""
    if augment in PER_IMAGE:
        return augment_lib.augment_image(augment, image, key, view)
    return views.resize(image, view)


def _batched(ds, batch_size, augment, seed, erasing, view):
    """Per-image outputs -> batches through the view's finish and the batch augmentation."""
    ds = ds.batch(batch_size, drop_remainder=True).enumerate()
    batch_augment = "none" if augment in PER_IMAGE else augment
    return ds.map(lambda step, b: (_augment_batch(views.finish(b[0], view), step, seed,
                                                  batch_augment, erasing), b[1]),
                  num_parallel_calls=AUTOTUNE)


def _folder_training(examples, batch_size, augment, seed, erasing, context):
    """A folder's training stream: positions and file indices first (`_permuted_indices`),
    then read, decode, orient and augment in a parallel map."""
    images, view = data.folder_images(examples.info), examples.view
    n = len(images)
    paths = tf.constant([im.read for im in images])
    labels = tf.constant([im.label for im in images], tf.int32)
    orientations = tf.constant([im.orientation for im in images], tf.int32)
    per, first = batch_size, 0  # each pipeline: its slice of every global batch
    if context is not None:
        per = context.get_per_replica_batch_size(batch_size)
        first = context.input_pipeline_id * per

    def positions(step):  # this pipeline's part of global batch `step`: (k, file index)
        k = tf.cast(step, tf.int64) * batch_size + first + tf.range(per, dtype=tf.int64)
        return k, _permuted_indices(step, batch_size, n, seed)[first:first + per]

    @tf.autograph.experimental.do_not_convert  # no Python control flow: no source re-read
    def read(k, i):
        image = image_files.read_upright(tf.gather(paths, i), tf.gather(orientations, i))
        return _view_image(image, _image_key(seed, 0, k), augment, view), tf.gather(labels, i)

    ds = tf.data.Dataset.counter().map(positions, num_parallel_calls=AUTOTUNE).unbatch()
    ds = ds.map(read, num_parallel_calls=AUTOTUNE).ignore_errors(log_warning=True)
    return _batched(ds, per, augment, seed, erasing, view)


def _stream_training(examples, batch_size, augment, seed, erasing, shuffle_buffer, context):
    ds, view = examples.dataset, examples.view
    pipeline_id = 0
    if context is not None:
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        batch_size = context.get_per_replica_batch_size(batch_size)
        pipeline_id = context.input_pipeline_id
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def one(index, example):
        image, label = example
        key = _image_key(seed, pipeline_id, index)
        return _view_image(image, key, augment, view), tf.cast(label, tf.int32)

    ds = ds.repeat().enumerate().map(one, num_parallel_calls=AUTOTUNE)
    return _batched(ds, batch_size, augment, seed, erasing, view)


def train_batches(examples: Examples, *, batch_size: int, augment: str = "cifar", seed: int = 0,
             erasing: float = 0.0, shuffle_buffer: int = 10_000,
             input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """An endless stream of augmented global batches (see the module docstring).

    input_context: shard for `distribute_datasets_from_function`; each pipeline then yields
    its `get_per_replica_batch_size(batch_size)` part."""
    _check_batch(batch_size)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment {augment!r} is not one of {AUGMENTATIONS}.")
    if examples.in_memory:
        ds = _memory_training(examples, batch_size, augment, seed, erasing, input_context)
    elif examples.info.folder is not None:
        ds = _folder_training(examples, batch_size, augment, seed, erasing, input_context)
    else:
        ds = _stream_training(examples, batch_size, augment, seed, erasing, shuffle_buffer,
                              input_context)
    return ds.prefetch(2)


def eval_batches(examples: Examples, *, batch_size: int = 500, drop_remainder: bool = False,
               input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Every example once, in order, through the evaluation view (`train.views.apply`)."""
    _check_batch(batch_size)
    view = examples.view
    if examples.in_memory:
        ds = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels))
    else:
        ds = examples.dataset.map(lambda x, y: (views.resize(x, view), tf.cast(y, tf.int32)),
                                  num_parallel_calls=AUTOTUNE)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(lambda x, y: (views.finish(x, view), y), num_parallel_calls=AUTOTUNE).prefetch(2)


def eval_arrays(examples: Examples, batch_size: int = 500) -> tuple:
    """(float32 (N, H, W, C) model inputs, int32 (N,) labels) of a split: `eval_batches` as
    arrays."""
    images, labels = zip(*eval_batches(examples, batch_size=batch_size).as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def batches(ds, info, *, training: bool, batch_size: int, augment: str = "cifar", seed: int = 0,
             image_size=None, shuffle_buffer: int = 10_000, erasing: float = 0.0,
             input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """`load`'s examples -> batches in one call: the view for `info`, `image_size` and
    `augment` (`train.views.for_dataset`), then `train_batches` (endless, augmented) or
    `eval_batches` (each example once)."""
    view = views.for_dataset(info, image_size, augment)
    examples = prepare(ds, info, view, augment)
    if training:
        return train_batches(examples, batch_size=batch_size, augment=augment, seed=seed,
                             erasing=erasing, shuffle_buffer=shuffle_buffer,
                             input_context=input_context)
    return eval_batches(examples, batch_size=batch_size, input_context=input_context)
