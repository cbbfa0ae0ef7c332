"""One training loop for every tf.distribute strategy.

    summary = train.loop.train(recipes.SMOKE, "runs/smoke")   # re-run to resume

`train` builds the run's `train.session.Session` (data, model, optimizer, compiled
`train.steps.Steps`, checkpoints; a custom loop, as Keras 3 `fit` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585), then trains it to the end: the
progress bar, metrics.csv and TensorBoard every `log_every` steps, an evaluation on the
recipe's eval split through the one evaluation view (and the plateau rule) at its interval,
and a checkpoint of model, optimizer, data iterator and counters every `checkpoint_every`
steps into the run directory (`train.rundir.RunDir`). Running the same command again resumes
from the last checkpoint: a run killed with SIGKILL and re-run ends bitwise equal to an
uninterrupted one. At the end: the test split, model.keras, curves.png, summary.json.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from train import confusion, rundir, strategies
from train import recipes as recipes_lib
from train import session as session_lib

# TensorBoard's scalar plugin metadata: events are written with tf.summary.write, so training
# does not need the tensorboard package (viewing them does).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
# The most test images (uint8 bytes) held in memory for the error report's mistakes grid.
_ERROR_REPORT_BYTES = 256 * 2**20


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


class Evaluation(NamedTuple):
    step: int
    loss: float
    accuracy: float


class _Clock:
    """The run's wall time (carried over from earlier sessions) and the training calls' pace."""

    def __init__(self, elapsed_before: float):
        self.start = time.perf_counter()
        self.elapsed_before = elapsed_before
        self.train_seconds, self.train_images = 0.0, 0
        self.phases = {}  # phase -> this session's seconds in its training calls (tracing too)

    def add_phase(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def add_training(self, seconds: float, images: int) -> None:
        self.train_seconds += seconds
        self.train_images += images

    @property
    def session_seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def total_seconds(self) -> float:
        return self.elapsed_before + self.session_seconds

    @property
    def images_per_sec(self) -> float | None:
        return self.train_images / self.train_seconds if self.train_seconds else None


def _log_scalars(writer, step: int, values: dict) -> None:
    with writer.as_default():
        for tag, value in values.items():
            if value is not None:
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=_SCALAR_METADATA)


def _next_stop(plan, step: int) -> int:
    """Where the training call from `step` ends: the next log, evaluation, checkpoint or phase
    boundary, or the run's end; at most `steps_per_execution` steps on. A call never crosses
    a phase boundary (the steps pick their phase from the step counter)."""
    every = (plan.log_every, plan.evaluation_interval, plan.checkpoint_every)
    stops = [plan.total_steps] + [(step // k + 1) * k for k in every]
    stops += [b for b in plan.phase_boundaries if b > step]
    return min(min(stops), step + plan.steps_per_execution)


def plateau_update(recipe, optimizer, error: float, counters: session_lib.Counters) -> None:
    """Divides the learning rate by 1/lr_decay after `plateau_patience` evaluations without
    `plateau_min_delta` improvement of the evaluation error (paper sec. 3.4)."""
    best, bad = counters.best_error, counters.bad_evals
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


def _log_training(s: session_lib.Session, writer, step: int, loss, acc, lr, clock: _Clock) -> dict:
    """metrics.csv's and TensorBoard's training figures since the last log; resets them."""
    ips = clock.images_per_sec
    s.steps.reset_train_metrics()
    _log_scalars(writer, step, {"train/loss": loss, "train/accuracy": acc,
                                "learning_rate": lr, "train/images_per_sec": ips})
    return dict(step=step, lr=float(f"{lr:.6g}"), train_loss=loss, train_accuracy=acc,
                images_per_sec=round(ips, 1) if ips else None)


def _evaluate(s: session_lib.Session, writer, step: int) -> Evaluation:
    """Evaluates on the eval split, logs it, and applies the plateau rule when it is the
    recipe's schedule."""
    loss, acc = s.steps.evaluate(s.data.eval)
    _log_scalars(writer, step, {"eval/loss": loss, "eval/accuracy": acc})
    if s.plan.lr_schedule == "plateau":
        plateau_update(s.plan, s.optimizer, 1.0 - acc, s.counters)
    return Evaluation(step, loss, acc)


class _Outcome(NamedTuple):
    rows: list  # metrics.csv, from the first step
    clock: _Clock
    last_eval: Evaluation | None  # this session's last


def _train_to_end(s: session_lib.Session, verbose: int) -> _Outcome:
    """Trains from the restored step to the plan's end: logs, evaluates and checkpoints at
    their intervals."""
    plan, run, total = s.plan, s.run, s.plan.total_steps
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
    clock = _Clock(float(s.counters.elapsed.numpy()))
    step, calls, last_eval = s.start_step, 0, None
    while step < total:
        n, phase = _next_stop(plan, step) - step, s.steps.phase_at(step)
        t0 = time.perf_counter()
        loss, acc = s.steps.train(s.iterator, n)
        clock.add_phase(phase, time.perf_counter() - t0)
        step, calls = step + n, calls + 1
        if calls > 1 or step >= total:  # the first call traces: keep it out of images/s
            clock.add_training(time.perf_counter() - t0, n * plan.batch_size)
        lr = float(keras.ops.convert_to_numpy(s.optimizer.learning_rate))
        progbar.update(step, [("loss", loss), ("accuracy", acc), ("lr", lr)])
        row = {}
        if step % plan.log_every == 0 or step == total:
            row.update(_log_training(s, writer, step, loss, acc, lr, clock))
        if step % plan.evaluation_interval == 0 or step == total:
            last_eval = _evaluate(s, writer, step)
            row.update(step=step, eval_loss=last_eval.loss, eval_accuracy=last_eval.accuracy)
        if row:
            row["elapsed_s"] = round(clock.total_seconds, 1)
            rows.append(row)
            run.append_metrics(row)
        if step % plan.checkpoint_every == 0 or step == total:
            s.checkpoints.save(step, clock.total_seconds)
    writer.flush()
    return _Outcome(rows, clock, last_eval)


def _test(s: session_lib.Session, last_eval: Evaluation | None) -> Evaluation:
    """The final model on the test split (the last evaluation when it was that)."""
    total = s.plan.total_steps
    if last_eval and last_eval.step == total and s.data.test is s.data.eval:
        return last_eval
    return Evaluation(total, *s.steps.evaluate(s.data.test))


def _predictions(model: keras.Model, batches, keep_images: bool) -> tuple:
    """(labels int (N,), probabilities float32 (N, classes), and when `keep_images` the images
    as uint8 (N, H, W, C), else None) of the model on `batches`, in inference mode."""
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    labels, probabilities, images = [], [], []
    for x, y in batches:
        probabilities.append(np.asarray(predict(x), np.float32))
        labels.append(y.numpy())
        if keep_images:
            images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
    return (np.concatenate(labels), np.concatenate(probabilities),
            np.concatenate(images) if keep_images else None)


def _error_report(s: session_lib.Session) -> dict:
    """confusion.png and mistakes.png in the run directory (`train.confusion`) from one
    inference pass over the test split; summary.json's entries of it. The mistakes grid needs
    the test images at hand: it is left out when they exceed _ERROR_REPORT_BYTES."""
    d = s.data
    keep_images = d.test_images * int(np.prod(d.view.shape)) <= _ERROR_REPORT_BYTES
    labels, probabilities, images = _predictions(s.model, d.test, keep_images)
    report = confusion.write_error_report(s.run.path, labels, probabilities,
                                          d.info.class_names, images)
    entries = {k: report[k] for k in ("balanced_accuracy", "worst_class", "per_class",
                                      "most_confused")}
    return json.loads(json.dumps(entries))  # as summary.json reads back


def _summary(s: session_lib.Session, test: Evaluation, clock: _Clock) -> dict:
    r, plan, run, n = s.recipe, s.plan, s.run, s.data.info.num_examples
    session, ips = clock.session_seconds, clock.images_per_sec
    return {
        "recipe": r.name, "model": r.model, "dataset": r.dataset,
        "test_accuracy": test.accuracy, "test_error": 1.0 - test.accuracy,
        "test_loss": test.loss, "test_split": r.test_split, "test_images": s.data.test_images,
        "steps": plan.total_steps, "global_batch_size": plan.batch_size,
        "epochs": round(plan.total_steps * plan.batch_size / n, 2) if n else None,
        "replicas": s.strategy.num_replicas_in_sync,
        "strategy": strategies.describe(s.strategy), **dataclasses.asdict(s.settings),
        "view": s.data.view.to_dict(), "params": int(s.model.count_params()),
        "weights_sha256": weights_digest(s.model), "resumed_from_step": s.start_step,
        "train_seconds": round(clock.elapsed_before + session, 1),
        "session_seconds": round(session, 1),
        "phase_seconds": {p: round(t, 1) for p, t in clock.phases.items()},
        "images_per_sec": round(ips, 1) if ips else None,
        "cpu": strategies.cpu_features(), "run_dir": run.path, "model_path": run.model,
        **s.records,
    }


def _finish(s: session_lib.Session, outcome: _Outcome) -> dict:
    """Tests the final model, writes model.keras, curves.png, the error pictures and
    summary.json."""
    test = _test(s, outcome.last_eval)
    summary = _summary(s, test, outcome.clock)
    run = s.run
    if run.chief:
        summary.update(_error_report(s))
        with rundir.atomic_path(run.model) as tmp:
            s.model.save(tmp)
        run.plot_curves(outcome.rows,
                        s.plan.boundaries if s.plan.lr_schedule == "piecewise" else ())
        run.write_summary(summary)
    s.checkpoints.remove_private()
    logging.info("Finished %s: test accuracy %.4f, %s images/s, %.0f s.", run.path,
                 test.accuracy, summary["images_per_sec"], summary["train_seconds"])
    return summary


def train(recipe, run_dir: str, strategy=None, *, data_dir: str | None = None,
          verbose: int = 1) -> dict:
    """Trains `recipe` in `run_dir`, resuming from its last checkpoint; returns the summary.

    recipe: a `Recipe`, a recipe name, or None to take run_dir's recipe.json.
    strategy: a `tf.distribute.Strategy`, a name for `train.strategies.make_strategy`
        ('auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'), or None ('auto').
    data_dir: TFDS data dir for `train.data.load`.
    verbose: 1 shows a Keras Progbar (chief only), 0 is silent.

    Returns (and writes to summary.json) test_accuracy on the recipe's test split, steps and
    epochs (as run: a length in epochs becomes steps), train_seconds, images_per_sec,
    weights_sha256 and the run's settings. A finished run directory returns its summary at
    once. `recipe.deterministic` makes the process deterministic first
    (`train.strategies.make_deterministic`).
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
    settings = session_lib.Settings(
        precision=strategies.precision_policy(recipe.mixed_precision, strategy),
        xla=strategies.use_xla(recipe.xla, strategy),
        synchronized_bn=replicas > 1 if recipe.synchronized_bn is None
        else recipe.synchronized_bn,
        deterministic=deterministic)
    # Before the data as well: a streamed split's shuffle pairs its op seed with TF's global one.
    keras.utils.set_random_seed(recipe.seed)
    logging.info("Training %s (%s) on %s, %s, in %s", recipe.model, recipe.name,
                 strategies.describe(strategy), settings, run.path)
    with _dtype_policy(settings.precision):
        s = session_lib.start(recipe, run, strategy, settings, data_dir)
        return _finish(s, _train_to_end(s, verbose))
