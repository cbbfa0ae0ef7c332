"""Input pipelines: batches of `(images float32 (B, H, W, C) in [0, 255], labels int32 (B,))`.

    examples = pipeline.prepare(ds, info, view, augment="cifar")
    train_ds = pipeline.train_batches(examples, batch_size=128, augment="cifar", seed=0)
    eval_ds = pipeline.eval_batches(examples, batch_size=500)

A split whose images fit in memory (`train.data.fits_in_memory`) is held as one uint8 array at
the view's size. Its training stream is a pure function of the step: batch s holds the images
at positions s*B .. s*B+B-1 of a sequence of epochs, each epoch a full permutation drawn from
(seed, epoch), augmented with a seed drawn from (seed, s). Nothing is decoded during training,
the data iterator's checkpoint is a counter, and a resumed run sees exactly the batches of an
uninterrupted one. Larger splits stream from disk: a seeded shuffle buffer (`shuffle_buffer`),
the view's resize per image, and the same batch augmentation; the iterator is checkpointed.

Every random choice is stateless (no stateful RNG op, so `tf.train.Checkpoint` can save the
iterator). Evaluation applies `train.views.apply`, the one evaluation view.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from train import augment as augment_lib
from train import data, views
from train.augment import AUGMENTATIONS

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
    """`load`'s examples as arrays when they fit in memory (and need no per-image scale
    augmentation), else as a stream."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment {augment!r} is not one of {AUGMENTATIONS}.")
    if augment != "imagenet" and data.fits_in_memory(info, view):
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


def _stream_training(examples, batch_size, augment, seed, erasing, shuffle_buffer, context):
    ds, view = examples.dataset, examples.view
    pipeline_id = 0
    if context is not None:
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        batch_size = context.get_per_replica_batch_size(batch_size)
        pipeline_id = context.input_pipeline_id
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    base = tf.constant([seed, 2 + pipeline_id], tf.int64)

    def one(index, example):
        image, label = example
        if augment == "imagenet":
            key = tf.random.experimental.stateless_fold_in(base, index)
            image = augment_lib.imagenet_image(image, key, size=(view.height, view.width))
        else:
            image = views.resize(image, view)
        return image, tf.cast(label, tf.int32)

    ds = ds.repeat().enumerate().map(one, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).enumerate()
    return ds.map(lambda step, b: (_augment_batch(views.finish(b[0], view), step, seed,
                                                  "none" if augment == "imagenet" else augment,
                                                  erasing), b[1]),
                  num_parallel_calls=AUTOTUNE)


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
