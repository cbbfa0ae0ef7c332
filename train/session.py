"""What one training process holds, fixed for the run, built once: `start`.

    session = train.session.start(recipe, run, strategy, settings, data_dir)
    session.steps.train(session.iterator, n)

A `Session` holds the recipe as given (recipe.json) and the plan that runs (`Recipe.resolved`: a
length in epochs turned into steps), the run directory, the strategy and `Settings`, the data
(`train.pipeline` batches through the one evaluation view), the model, optimizer and
compiled `train.steps.Steps`, the `Counters` and the `Checkpoints` that save them with the
data iterator, the step restored from the last checkpoint, and the summary.json entries known
at the start (pretrained weights, the folder's outcome); labels.txt in the run directory.
`train.loop` drives it.
"""

import dataclasses
import os
import shutil
import tempfile
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from train import data, pipeline, rundir, views
from train import model as model_lib
from train import recipes as recipes_lib
from train.steps import Steps, make_optimizer


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this process runs the recipe; summary.json records them."""

    precision: str  # the Keras dtype policy
    xla: bool
    synchronized_bn: bool
    deterministic: bool


class Counters(NamedTuple):
    """The run's counters, checkpointed with the model under these names."""

    step: tf.Variable  # optimizer steps done
    elapsed: tf.Variable  # seconds of the run, over all its sessions
    best_error: tf.Variable  # the plateau rule's best evaluation error
    bad_evals: tf.Variable  # evaluations since it improved

    @classmethod
    def create(cls) -> "Counters":
        return cls(tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
                   tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds"),
                   tf.Variable(1.0, dtype=tf.float64, trainable=False, name="best_eval_error"),
                   tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_since_best"))


class Data(NamedTuple):
    """The run's data: the training split's info and view, its stream of global batches, the
    evaluation and test batches (the same object when the splits are equal), the test split's
    size and the normalization mean (None with pretrained weights, which bring theirs)."""

    info: data.DatasetInfo
    view: views.View
    train: tf.data.Dataset
    eval: tf.data.Dataset
    test: tf.data.Dataset
    test_images: int
    mean: np.ndarray | None


def folder_options(recipe: recipes_lib.Recipe) -> dict:
    """The recipe's folder rules as keyword arguments of `train.data.load` and `describe`."""
    return {"bad_images": recipe.bad_images, "holdout": recipe.holdout}


def _datasets(r: recipes_lib.Recipe, data_dir) -> Data:
    options = folder_options(r)
    train_raw, info = data.load(r.dataset, r.train_split, data_dir=data_dir, **options)
    view = views.for_recipe(info, r)  # the run's one view: export reads the same
    train_ex = pipeline.prepare(train_raw, info, view, r.augment)

    def eval_examples(split):
        raw, split_info = data.load(r.dataset, split, data_dir=data_dir, **options)
        return pipeline.prepare(raw, split_info, view, "none")

    eval_ex = eval_examples(r.eval_split)
    test_ex = eval_ex if r.test_split == r.eval_split else eval_examples(r.test_split)
    eval_ds = pipeline.eval_batches(eval_ex, batch_size=r.batch_size)
    test_ds = eval_ds if test_ex is eval_ex else pipeline.eval_batches(
        test_ex, batch_size=r.batch_size)
    train_ds = pipeline.train_batches(train_ex, batch_size=r.batch_size, augment=r.augment,
                                      seed=r.seed, erasing=r.erasing,
                                      shuffle_buffer=r.shuffle_buffer)
    mean = None  # pretrained weights bring their own normalization (train.model)
    if r.weights == "none":  # streamed photos: decodes up to 10,000 of them, once
        mean = data.normalization(info, view, train_ex.images, train_ex.dataset)
    return Data(info, view, train_ds, eval_ds, test_ds, len(test_ex), mean)


class Checkpoints:
    """Model, optimizer, data iterator and counters, saved into the run directory by
    `tf.train.CheckpointManager` (atomic; the last `keep` kept) and restored on a re-run."""

    def __init__(self, run: rundir.RunDir, strategy, checkpoint, counters: Counters, keep: int):
        self.run, self.checkpoint, self.counters = run, checkpoint, counters
        if run.chief:
            os.makedirs(run.checkpoints, exist_ok=True)
            run.remove_partial_checkpoints()
        self.manager = tf.train.CheckpointManager(checkpoint, self._directory(strategy),
                                                  max_to_keep=keep, step_counter=counters.step)

    def _directory(self, strategy) -> str:
        """The chief's checkpoint dir, or a private temporary one on other workers (every
        worker must save, since saving reads distributed variables; the chief's is kept)."""
        if self.run.chief:
            return self.run.checkpoints
        resolver = strategy.cluster_resolver
        task = f"{resolver.task_type}{resolver.task_id}" if resolver else "worker"
        return tempfile.mkdtemp(prefix=f"keras_resnet_{task}_")

    def restore(self) -> int:
        """Restores the last checkpoint, if any; returns the step it holds (0 without)."""
        latest = tf.train.latest_checkpoint(self.run.checkpoints)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s (step %d).", latest, int(self.counters.step.numpy()))
        return int(self.counters.step.numpy())

    def save(self, step: int, elapsed_seconds: float) -> None:
        self.counters.elapsed.assign(elapsed_seconds)
        self.manager.save(checkpoint_number=step)

    def remove_private(self) -> None:
        """A non-chief worker's checkpoints, once the run is over."""
        if not self.run.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Session:
    """What one training process holds, fixed for the run; built once, by `start`."""

    recipe: recipes_lib.Recipe  # as given: recipe.json
    plan: recipes_lib.Recipe  # what runs: `recipe.resolved` for the training split
    run: rundir.RunDir
    strategy: tf.distribute.Strategy
    settings: Settings
    data: Data
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    steps: Steps
    counters: Counters
    iterator: object  # over data.train, checkpointed
    checkpoints: Checkpoints
    start_step: int  # restored from the last checkpoint
    records: dict  # summary.json entries: pretrained weights, the folder's outcome


def start(recipe, run: rundir.RunDir, strategy, settings: Settings, data_dir) -> Session:
    """Data, model, optimizer, steps and checkpoints; restores the last checkpoint."""
    d = _datasets(recipe, data_dir)
    plan = recipe.resolved(d.info.num_examples)  # epochs become steps
    # Seeded again after the data: a first run's TFDS preparation draws from Python's `random`,
    # where Keras' initializers take their seed, and moved the first run's weights off later runs'.
    keras.utils.set_random_seed(recipe.seed)
    with strategy.scope():
        model, weights = model_lib.build_model(plan, d.view, d.mean, d.info.num_classes,
                                               settings.synchronized_bn, d.info.class_names)
        optimizer = make_optimizer(plan, settings.precision)
        optimizer.build(model.trainable_variables)
    counters = Counters.create()
    iterator = iter(d.train)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, iterator=iterator,
                                     **counters._asdict())
    run.save_recipe(recipe.to_json())
    checkpoints = Checkpoints(run, strategy, checkpoint, counters, plan.keep_checkpoints)
    start_step = checkpoints.restore()
    steps = Steps(model, optimizer, strategy, plan, d.info.num_classes, jit=settings.xla,
                  step=counters.step)
    folder = {}
    if run.chief:
        folder = data.record(d.info, run.path)  # skipped, held-out files
        rundir.write_labels(run.path, d.info.class_names)  # export.evaluate reads it
    return Session(recipe, plan, run, strategy, settings, d, model, optimizer, steps, counters,
                    iterator, checkpoints, start_step, {"weights": weights, **folder})
