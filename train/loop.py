"""One training loop for every tf.distribute strategy.

    summary = train.loop.train(recipes.SMOKE, "runs/smoke")   # re-run to resume

The loop drives `train.steps.Steps` (a custom loop: Keras 3 `fit` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585) over `train.pipeline` batches, evaluates
on the recipe's eval split through the one evaluation view, checkpoints model, optimizer, data
iterator and counters every `checkpoint_every` steps into the run directory
(`train.rundir.RunDir`), and resumes from the last checkpoint when the same command runs again:
a run killed with SIGKILL and re-run ends bitwise equal to an uninterrupted one.
"""

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from train import data, pipeline, rundir, strategies, views
from train import model as model_lib
from train import recipes as recipes_lib
from train.steps import Steps, make_optimizer

# TensorBoard's scalar plugin metadata: events are written with tf.summary.write, so training
# does not need the tensorboard package (viewing them does).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of all of `model`'s weights (in `model.weights` order): equal digests mean
    bitwise-equal models (e.g. on every worker of a multi-worker run)."""
    digest = hashlib.sha256()
    for v in model.weights:
        digest.update(v.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return digest.hexdigest()


def resolve_recipe(run: rundir.RunDir, recipe) -> recipes_lib.Recipe:
    """The recipe to run: `recipe` (a Recipe or a name; it must equal recipe.json when there is
    one), or recipe.json's when `recipe` is None."""
    text = run.read_recipe_json()
    saved = recipes_lib.Recipe.from_json(text) if text else None
    if recipe is None:
        if saved is None:
            raise ValueError(f"no recipe given and {run.recipe} does not exist: pass a recipe "
                             f"(e.g. 'paper_cifar') to start a run in {run.path}.")
        return saved
    if isinstance(recipe, str):
        recipe = recipes_lib.resolve(recipe)
    if saved is not None and saved.diff(recipe):
        lines = "; ".join(f"{k}: saved {a!r}, requested {b!r}"
                          for k, (a, b) in saved.diff(recipe).items())
        raise ValueError(f"run directory {run.path} holds a different recipe ({lines}). Re-run "
                         "with the saved recipe to resume (or pass no recipe), or use a new "
                         "run_dir.")
    return saved or recipe


@contextlib.contextmanager
def _dtype_policy(name: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclasses.dataclass
class _Session:
    """Everything one training process holds."""

    recipe: recipes_lib.Recipe
    run: rundir.RunDir
    strategy: object
    settings: dict  # precision, xla, synchronized_bn, deterministic
    info: data.DatasetInfo = None
    view: views.View = None
    model: keras.Model = None
    optimizer: object = None
    steps: Steps = None
    iterator: object = None
    eval_ds: object = None
    test_ds: object = None
    test_images: int = 0
    counters: dict = None
    manager: object = None
    start_step: int = 0


def _datasets(s: _Session, data_dir):
    """The training stream, the evaluation and test batches, and the normalization mean."""
    r = s.recipe
    train_raw, s.info = data.load(r.dataset, r.train_split, data_dir=data_dir)
    s.view = views.for_dataset(s.info, r.image_size, r.augment)
    train_ex = pipeline.prepare(train_raw, s.info, s.view, r.augment)

    def eval_examples(split):
        raw, info = data.load(r.dataset, split, data_dir=data_dir)
        return pipeline.prepare(raw, info, s.view, "none")

    eval_ex = eval_examples(r.eval_split)
    test_ex = eval_ex if r.test_split == r.eval_split else eval_examples(r.test_split)
    s.eval_ds = pipeline.eval_batches(eval_ex, batch_size=r.batch_size)
    s.test_ds = s.eval_ds if test_ex is eval_ex else pipeline.eval_batches(
        test_ex, batch_size=r.batch_size)
    s.test_images = len(test_ex)
    train_ds = pipeline.train_batches(train_ex, batch_size=r.batch_size, augment=r.augment,
                                      seed=r.seed, erasing=r.erasing,
                                      shuffle_buffer=r.shuffle_buffer)
    return train_ds, data.normalization(s.info, s.view, train_ex.images, train_ex.dataset)


def _worker_checkpoint_dir(s: _Session) -> str:
    """The chief's checkpoint dir, or a private temporary one on other workers (every worker
    must save, since saving reads distributed variables, but only the chief's is kept)."""
    if s.run.chief:
        return s.run.checkpoints
    resolver = s.strategy.cluster_resolver
    task = f"{resolver.task_type}{resolver.task_id}" if resolver else "worker"
    return tempfile.mkdtemp(prefix=f"keras_resnet_{task}_")


def _setup(s: _Session, data_dir) -> None:
    """Data, model, optimizer, steps and checkpoint; restores the last checkpoint."""
    train_ds, mean = _datasets(s, data_dir)
    # Seeded again after the data: a first run's TFDS preparation draws from Python's `random`,
    # where Keras' initializers take their seed, and moved the first run's weights off later runs'.
    keras.utils.set_random_seed(s.recipe.seed)
    with s.strategy.scope():
        s.model = model_lib.build_model(s.recipe, s.view, mean, s.info.num_classes,
                                        s.settings["synchronized_bn"])
        s.optimizer = make_optimizer(s.recipe, s.settings["precision"])
        s.optimizer.build(s.model.trainable_variables)
    s.counters = {
        "step": tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
        "elapsed": tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds"),
        "best_error": tf.Variable(1.0, dtype=tf.float64, trainable=False, name="best_eval_error"),
        "bad_evals": tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_since_best"),
    }
    s.iterator = iter(train_ds)
    checkpoint = tf.train.Checkpoint(model=s.model, optimizer=s.optimizer, iterator=s.iterator,
                                     **s.counters)
    s.run.save_recipe(s.recipe.to_json())
    if s.run.chief:
        os.makedirs(s.run.checkpoints, exist_ok=True)
        s.run.remove_partial_checkpoints()
    s.manager = tf.train.CheckpointManager(checkpoint, _worker_checkpoint_dir(s),
                                           max_to_keep=s.recipe.keep_checkpoints,
                                           step_counter=s.counters["step"])
    latest = tf.train.latest_checkpoint(s.run.checkpoints)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("Resumed from %s (step %d).", latest, int(s.counters["step"].numpy()))
    s.start_step = int(s.counters["step"].numpy())
    s.steps = Steps(s.model, s.optimizer, s.strategy, s.recipe, s.info.num_classes,
                    jit=s.settings["xla"], step=s.counters["step"])


def _log_scalars(writer, step: int, values: dict) -> None:
    with writer.as_default():
        for tag, value in values.items():
            if value is not None:
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=_SCALAR_METADATA)


def _next_stop(recipe, s):
    total = recipe.total_steps
    stops = [total] + [(s // k + 1) * k for k in (recipe.log_every, recipe.evaluation_interval,
                                                  recipe.checkpoint_every)]
    return min(min(stops), s + recipe.steps_per_execution)


def _plateau_update(recipe, optimizer, error, counters):
    """Divides the learning rate by 1/lr_decay after `plateau_patience` evaluations without
    `plateau_min_delta` improvement of the evaluation error (paper sec. 3.4)."""
    best, bad = counters["best_error"], counters["bad_evals"]
    if error < float(best.numpy()) - recipe.plateau_min_delta:
        best.assign(error)
        bad.assign(0)
        return
    bad.assign_add(1)
    if int(bad.numpy()) >= recipe.plateau_patience:
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate)) * recipe.lr_decay
        optimizer.learning_rate = lr
        bad.assign(0)
        best.assign(min(error, float(best.numpy())))
        logging.info("Evaluation error plateaued at %.4f: learning rate now %g.", error, lr)


def _loop(s: _Session, verbose: int) -> tuple:
    """Trains from the restored step to the end; returns (metrics rows, timing, last eval)."""
    r, run, total = s.recipe, s.run, s.recipe.total_steps
    rows = run.read_metrics(up_to_step=s.start_step)
    run.rewrite_metrics(rows)  # drops rows written after the checkpoint we resume from
    if run.chief:
        os.makedirs(run.logs, exist_ok=True)
    writer = tf.summary.create_file_writer(run.logs) if run.chief else \
        tf.summary.create_noop_writer()
    progbar = keras.utils.Progbar(total, stateful_metrics=["loss", "accuracy", "lr"],
                                  verbose=1 if (verbose and run.chief) else 0)
    if s.start_step:
        progbar.update(s.start_step)
    timing = {"start": time.perf_counter(), "elapsed0": float(s.counters["elapsed"].numpy()),
              "train_time": 0.0, "train_images": 0}
    step, calls, last_eval = s.start_step, 0, None
    while step < total:
        n = _next_stop(r, step) - step
        t0 = time.perf_counter()
        loss, acc = s.steps.train(s.iterator, n)
        step, calls = step + n, calls + 1
        if calls > 1 or step >= total:  # the first call traces: keep it out of images/s
            timing["train_time"] += time.perf_counter() - t0
            timing["train_images"] += n * r.batch_size
        lr = float(keras.ops.convert_to_numpy(s.optimizer.learning_rate))
        progbar.update(step, [("loss", loss), ("accuracy", acc), ("lr", lr)])
        row = {}
        if step % r.log_every == 0 or step == total:
            ips = timing["train_images"] / timing["train_time"] if timing["train_time"] else None
            row.update(step=step, lr=float(f"{lr:.6g}"), train_loss=loss, train_accuracy=acc,
                       images_per_sec=round(ips, 1) if ips else None)
            s.steps.reset_train_metrics()
            _log_scalars(writer, step, {"train/loss": loss, "train/accuracy": acc,
                                        "learning_rate": lr, "train/images_per_sec": ips})
        if step % r.evaluation_interval == 0 or step == total:
            e_loss, e_acc = s.steps.evaluate(s.eval_ds)
            last_eval = (step, e_loss, e_acc)
            row.update(step=step, eval_loss=e_loss, eval_accuracy=e_acc)
            _log_scalars(writer, step, {"eval/loss": e_loss, "eval/accuracy": e_acc})
            if r.lr_schedule == "plateau":
                _plateau_update(r, s.optimizer, 1.0 - e_acc, s.counters)
        if row:
            row["elapsed_s"] = round(timing["elapsed0"] + time.perf_counter() - timing["start"], 1)
            rows.append(row)
            run.append_metrics(row)
        if step % r.checkpoint_every == 0 or step == total:
            s.counters["elapsed"].assign(timing["elapsed0"] + time.perf_counter()
                                         - timing["start"])
            s.manager.save(checkpoint_number=step)
    writer.flush()
    return rows, timing, last_eval


def _finish(s: _Session, rows, timing, last_eval) -> dict:
    """Tests the final model, writes model.keras, curves.png and summary.json."""
    r, run = s.recipe, s.run
    if last_eval and last_eval[0] == r.total_steps and s.test_ds is s.eval_ds:
        test_loss, test_acc = last_eval[1:]
    else:
        test_loss, test_acc = s.steps.evaluate(s.test_ds)
    session = time.perf_counter() - timing["start"]
    summary = {
        "recipe": r.name, "model": r.model, "dataset": r.dataset,
        "test_accuracy": test_acc, "test_error": 1.0 - test_acc, "test_loss": test_loss,
        "test_split": r.test_split, "test_images": s.test_images,
        "steps": r.total_steps, "global_batch_size": r.batch_size,
        "epochs": round(r.total_steps * r.batch_size / s.info.num_examples, 2)
        if s.info.num_examples else None,
        "replicas": s.strategy.num_replicas_in_sync,
        "strategy": strategies.describe(s.strategy), **s.settings,
        "view": s.view.to_dict(), "params": int(s.model.count_params()),
        "weights_sha256": weights_digest(s.model), "resumed_from_step": s.start_step,
        "train_seconds": round(timing["elapsed0"] + session, 1),
        "session_seconds": round(session, 1),
        "images_per_sec": round(timing["train_images"] / timing["train_time"], 1)
        if timing["train_time"] else None,
        "cpu": strategies.cpu_features(), "run_dir": run.path, "model_path": run.model,
    }
    if run.chief:
        with rundir.atomic_path(run.model) as tmp:
            s.model.save(tmp)
        run.plot_curves(rows, r.boundaries if r.lr_schedule == "piecewise" else ())
        run.write_summary(summary)
    else:
        shutil.rmtree(s.manager.directory, ignore_errors=True)
    logging.info("Finished %s: test accuracy %.4f, %s images/s, %.0f s.", run.path, test_acc,
                 summary["images_per_sec"], summary["train_seconds"])
    return summary


def train(recipe, run_dir: str, strategy=None, *, data_dir: str | None = None,
          verbose: int = 1) -> dict:
    """Trains `recipe` in `run_dir`, resuming from its last checkpoint; returns the summary.

    recipe: a `Recipe`, a recipe name, or None to take run_dir's recipe.json.
    strategy: a `tf.distribute.Strategy`, a name for `train.strategies.make_strategy`
        ('auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'), or None ('auto').
    data_dir: TFDS data dir for `train.data.load`.
    verbose: 1 shows a Keras Progbar (chief only), 0 is silent.

    Returns (and writes to summary.json) test_accuracy on the recipe's test split, steps,
    train_seconds, images_per_sec, weights_sha256 and the run's settings. A finished run
    directory returns its summary at once. `recipe.deterministic` makes the process
    deterministic first (`train.strategies.make_deterministic`).
    """
    # Read the recipe before the strategy exists: determinism must be set up before
    # TensorFlow's runtime starts.
    recipe = resolve_recipe(rundir.RunDir(run_dir), recipe)
    deterministic = strategies.make_deterministic(recipe.deterministic)
    strategy = strategies.resolve(strategy)
    run = rundir.RunDir(run_dir, strategies.is_chief(strategy))
    if run.finished:
        logging.info("Run %s is complete; returning its summary.", run.path)
        return run.read_summary()
    replicas = strategy.num_replicas_in_sync
    if recipe.batch_size % replicas:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {replicas} "
                         f"replicas of {strategies.describe(strategy)}: pick a multiple of "
                         f"{replicas}.")
    settings = {
        "precision": strategies.precision_policy(recipe.mixed_precision, strategy),
        "xla": strategies.use_xla(recipe.xla, strategy),
        "synchronized_bn": replicas > 1 if recipe.synchronized_bn is None
        else recipe.synchronized_bn,
        "deterministic": deterministic,
    }
    # Before the data as well: a streamed split's shuffle pairs its op seed with TF's global one.
    keras.utils.set_random_seed(recipe.seed)
    logging.info("Training %s (%s) on %s, %s, in %s", recipe.model, recipe.name,
                 strategies.describe(strategy), settings, run.path)
    s = _Session(recipe, run, strategy, settings)
    with _dtype_policy(settings["precision"]):
        _setup(s, data_dir)
        return _finish(s, *_loop(s, verbose))
