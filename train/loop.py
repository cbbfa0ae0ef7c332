"""One training loop for every tf.distribute strategy, and the run directory it keeps.

    summary = train.loop.train(recipes.SMOKE, "runs/smoke")   # re-run to resume

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so this
is a custom loop: a `tf.function` calls `strategy.run` on a replica step (Keras model, Keras
optimizer, Keras metrics), the loss is `tf.nn.compute_average_loss` over the global batch,
and the Keras optimizer all-reduces the gradients. Every worker reads the same global batch
from one stateless, checkpointable `tf.data` iterator and each replica takes its slice, so a
run gives the same numbers on one device, on N replicas and on N workers (up to the rounding
of all-reduce and of synchronized BatchNorm), and a crashed run resumes bitwise.

Run directory:
    recipe.json    the resolved recipe; a re-run must ask for the same one
    checkpoints/   ckpt-<step>: model, optimizer, data iterator, step (tf.train.CheckpointManager)
    logs/          TensorBoard events: train/loss, train/accuracy, eval/..., learning_rate
    metrics.csv    step, lr, train and eval loss/accuracy, images/s, elapsed time
    model.keras    the final model (raw pixels in: it subtracts the dataset's mean itself)
    curves.png     loss and error against iterations
    summary.json   what `train` returns
"""

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

import keras_resnet
from train import data as data_lib
from train import recipes as recipes_lib
from train import strategies as strategies_lib

CSV_FIELDS = ("step", "lr", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
              "images_per_sec", "elapsed_s")


# ------------------------------------------------------------------------------ model


def build_model(recipe: recipes_lib.Recipe, info: data_lib.DatasetInfo,
                synchronized_bn: bool = False) -> keras.Model:
    """The recipe's network for `info`'s images: raw pixels (B, H, W, C) in [0, 255] ->
    class probabilities (B, classes).

    A `Normalization` layer (float32) subtracts `info.mean` first: the per-pixel mean image
    when it matches the input size (paper sec. 4.2), else its per-channel average; 127.5 when
    the dataset has no mean. Then `keras_resnet.create(recipe.model, weights=None)` (He init);
    any CIFAR depth 6n+2 ('resnet8', 'plain14', ...) is accepted too. `recipe.shortcut`
    other than 'default' replaces the variant's shortcut option (sec. 3.3).
    """
    channels = info.image_shape[-1] or 3
    if recipe.image_size:
        shape = (recipe.image_size, recipe.image_size, channels)
    else:
        shape = tuple(info.image_shape[:2]) + (channels,)
    if info.mean is None:
        mean = np.full((channels,), 127.5, np.float32)
    else:
        mean = np.asarray(info.mean, np.float32)
        if mean.shape != shape:
            mean = mean.reshape(-1, mean.shape[-1]).mean(axis=0)
    axis = (1, 2, 3) if mean.ndim == 3 else -1
    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Normalization(axis=axis, mean=mean, variance=np.ones_like(mean),
                                   dtype="float32", name="mean_subtraction")(inputs)
    kwargs = dict(weights=None, input_tensor=x, classes=info.num_classes,
                  synchronized_bn=synchronized_bn, bn_momentum=recipe.bn_momentum,
                  zero_init_residual=recipe.zero_init_residual)
    name = _check_model_name(recipe.model)
    if recipe.shortcut != "default":
        if name.startswith("plain"):
            raise ValueError(f"model {recipe.model!r} is a plain net (no shortcuts); got "
                             f"shortcut={recipe.shortcut!r}. Use shortcut='default'.")
        kwargs["shortcut"] = recipe.shortcut
    if name in keras_resnet.ARCHS:
        return keras_resnet.create(name, **kwargs)
    match = re.fullmatch(r"(resnet|plain)(\d+)", name)
    return keras_resnet.ResNet(int(match.group(2)), plain=match.group(1) == "plain", cifar=True,
                               **kwargs)


def _check_model_name(model: str) -> str:
    name = model.lower()
    if name in keras_resnet.ARCHS:
        return name
    match = re.fullmatch(r"(resnet|plain)(\d+)", name)
    if not match:
        raise ValueError(
            f"unknown model {model!r}: use one of {sorted(keras_resnet.ARCHS)}, or "
            "'resnetN'/'plainN' with N = 6n+2 for a CIFAR-style net (e.g. 'resnet8')."
        )
    depth = int(match.group(2))
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"model {model!r}: a CIFAR-style depth must be 6n+2 with n >= 1 "
                         "(8, 14, 20, 32, 44, 56, 110, ...).")
    return name


def make_optimizer(recipe: recipes_lib.Recipe, policy: str) -> keras.optimizers.Optimizer:
    """SGD with the recipe's momentum and lr schedule; wrapped in a LossScaleOptimizer for
    float16. Weight decay is not here: it is an L2 term of the loss (see `Steps`)."""
    if recipe.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}: use 'sgd'.")
    optimizer = keras.optimizers.SGD(
        learning_rate=recipe.learning_rate(), momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# TensorBoard's scalar plugin metadata: events are written with tf.summary.write, so training
# does not need the tensorboard package (viewing them does).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def _log_scalars(writer, step: int, values: dict) -> None:
    with writer.as_default():
        for tag, value in values.items():
            if value is not None:
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                                 metadata=_SCALAR_METADATA)


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of all of `model`'s weights (in `model.weights` order): equal digests mean
    bitwise-equal models (e.g. on every worker of a multi-worker run)."""
    digest = hashlib.sha256()
    for v in model.weights:
        digest.update(v.path.encode())
        digest.update(np.ascontiguousarray(tf.convert_to_tensor(v).numpy()).tobytes())
    return digest.hexdigest()


def _scalar(value) -> float:
    return float(tf.convert_to_tensor(value).numpy())


# ----------------------------------------------------------------------- run directory


@contextlib.contextmanager
def _atomic(path: str):
    """Yields a temporary path beside `path`, renamed to `path` when the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_",
                               suffix=os.path.splitext(path)[1])
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _RunDir:
    """Paths and small atomic writes inside a run directory (only the chief writes)."""

    def __init__(self, path: str, chief: bool):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.chief = chief
        self.recipe = os.path.join(self.path, "recipe.json")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.logs = os.path.join(self.path, "logs")
        self.metrics = os.path.join(self.path, "metrics.csv")
        self.model = os.path.join(self.path, "model.keras")
        self.curves = os.path.join(self.path, "curves.png")
        self.summary = os.path.join(self.path, "summary.json")

    def write_text(self, path: str, text: str) -> None:
        """Writes via a temporary file and a rename: a reader sees all of it or none."""
        if not self.chief:
            return
        with _atomic(path) as tmp:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def resolve_recipe(self, recipe) -> recipes_lib.Recipe:
        """The recipe to run: `recipe` (checked against recipe.json if there is one), or
        recipe.json's when `recipe` is None."""
        saved = None
        if os.path.exists(self.recipe):
            with open(self.recipe) as f:
                saved = recipes_lib.Recipe.from_json(f.read())
        if recipe is None:
            if saved is None:
                raise ValueError(
                    f"no recipe given and {self.recipe} does not exist: pass a recipe "
                    f"(e.g. 'paper_cifar') to start a run in {self.path}."
                )
            return saved
        if isinstance(recipe, str):
            recipe = recipes_lib.resolve(recipe)
        if saved is not None:
            diff = saved.diff(recipe)
            if diff:
                lines = "; ".join(
                    f"{k}: saved {a!r}, requested {b!r}" for k, (a, b) in diff.items()
                )
                raise ValueError(
                    f"run directory {self.path} holds a different recipe ({lines}). Re-run with "
                    "the saved recipe to resume (or pass no recipe), or use a new run_dir."
                )
            return saved
        return recipe

    def save_recipe(self, recipe) -> None:
        """Writes recipe.json once the run has started (its model and data exist), so a
        run that could not start leaves no recipe behind to conflict with a corrected one."""
        if self.chief and not os.path.exists(self.recipe):
            os.makedirs(self.path, exist_ok=True)
            self.write_text(self.recipe, recipe.to_json())

    def remove_partial_checkpoints(self) -> list:
        """Deletes `ckpt-N_temp*` left by a process killed while saving; returns them."""
        leftovers = glob.glob(os.path.join(self.checkpoints, "*_temp*"))
        leftovers += glob.glob(os.path.join(self.path, ".tmp_*"))
        for path in leftovers:
            logging.warning("Removing %s, left by an interrupted save.", path)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        return leftovers

    def read_metrics(self, up_to_step=None) -> list:
        if not os.path.exists(self.metrics):
            return []
        with open(self.metrics, newline="") as f:
            rows = []
            for row in csv.DictReader(f):
                try:
                    step = int(row["step"])
                except (TypeError, ValueError):
                    continue  # a line cut short by a crash
                if None in row.values() or (up_to_step is not None and step > up_to_step):
                    continue
                rows.append(row)
        return rows

    def rewrite_metrics(self, rows) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        self.write_text(self.metrics, out.getvalue())

    def append_metrics(self, row: dict) -> None:
        if not self.chief:
            return
        with open(self.metrics, "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(
                {k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS}
            )


def plot_curves(rows, path: str, boundaries=()) -> None:
    """Training curves from metrics.csv rows: loss and error (%) against iterations."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    def series(key, transform=float):
        pts = [(int(r["step"]), transform(r[key])) for r in rows if r.get(key) not in ("", None)]
        return zip(*pts) if pts else ((), ())

    fig = Figure(figsize=(11, 4))
    ax_loss, ax_err = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("eval_loss", "eval")):
        ax_loss.plot(*series(key), label=label, marker="." if key == "eval_loss" else None)
    for key, label in (("train_accuracy", "train"), ("eval_accuracy", "eval")):
        ax_err.plot(*series(key, lambda v: 100 * (1 - float(v))), label=label,
                    marker="." if key == "eval_accuracy" else None)
    for ax, name in ((ax_loss, "loss"), (ax_err, "error (%)")):
        for b in boundaries:
            ax.axvline(b, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("iterations")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with _atomic(path) as tmp:
        fig.savefig(tmp, dpi=100)


# --------------------------------------------------------------------------- training


@contextlib.contextmanager
def _dtype_policy(name: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _make_strategy(strategy):
    if strategy is None:
        return strategies_lib.make_strategy("auto")
    if isinstance(strategy, str):
        return strategies_lib.make_strategy(strategy)
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise ValueError(f"strategy must be None, a name {strategies_lib.STRATEGIES} or a "
                     f"tf.distribute.Strategy; got {strategy!r}.")


def _replica_slice(strategy, images, labels):
    """Per-replica values: replica r gets rows [r*n/R, (r+1)*n/R) of the global batch."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return strategy.experimental_distribute_values_from_function(lambda _: (images, labels))

    def part(ctx):
        n = tf.shape(labels)[0]
        r = ctx.replica_id_in_sync_group
        start, stop = r * n // replicas, (r + 1) * n // replicas
        return images[start:stop], labels[start:stop]

    return strategy.experimental_distribute_values_from_function(part)


class Steps:
    """The compiled steps of the loop, for one model, optimizer and strategy.

    `train(iterator, n)` runs n optimizer steps on global batches `(images (B, H, W, C),
    labels (B,))` from a `tf.data` iterator (each replica takes its slice), increments `step`
    and returns the running (loss, accuracy) since `reset_train_metrics`. `evaluate(dataset)`
    returns (loss, accuracy) over a finite dataset of global batches.

    Replica step: cross-entropy (label-smoothed when the recipe says so) averaged over the
    global batch with `tf.nn.compute_average_loss`, plus the L2 weight decay on kernels, then
    `optimizer.apply`, which all-reduces the gradients across replicas.
    """

    def __init__(self, model, optimizer, strategy, recipe, num_classes, *, jit=False,
                 step=None):
        self.strategy = strategy
        with strategy.scope():
            self.train_loss = keras.metrics.Mean(name="train_loss")
            self.train_acc = keras.metrics.SparseCategoricalAccuracy(name="train_accuracy")
            self.eval_loss = keras.metrics.Mean(name="eval_loss")
            self.eval_acc = keras.metrics.SparseCategoricalAccuracy(name="eval_accuracy")
        self.step = step if step is not None else tf.Variable(0, dtype=tf.int64,
                                                              trainable=False)
        global_batch = recipe.batch_size
        decay_vars = [v for v in model.trainable_variables if v.path.endswith("kernel")]
        smoothing = recipe.label_smoothing
        weight_decay = recipe.weight_decay

        def per_example_loss(labels, probs):
            if smoothing:
                onehot = tf.one_hot(labels, num_classes)
                return keras.losses.categorical_crossentropy(onehot, probs,
                                                             label_smoothing=smoothing)
            return keras.losses.sparse_categorical_crossentropy(labels, probs)

        def replica_train_step(images, labels):
            with tf.GradientTape() as tape:
                probs = model(images, training=True)
                losses = per_example_loss(labels, probs)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
                if weight_decay and decay_vars:
                    # Caffe's weight decay: L2 penalty wd/2 * ||w||^2 on kernels, gradient
                    # wd * w, which the optimizer sums over replicas (hence the scaling).
                    l2 = tf.add_n([tf.nn.l2_loss(tf.convert_to_tensor(v)) for v in decay_vars])
                    loss += tf.nn.scale_regularization_loss(weight_decay * l2)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            self.train_loss.update_state(losses)
            self.train_acc.update_state(labels, probs)

        def replica_eval_step(images, labels):
            probs = model(images, training=False)
            self.eval_loss.update_state(keras.losses.sparse_categorical_crossentropy(labels, probs))
            self.eval_acc.update_state(labels, probs)

        if jit:
            replica_train_step = tf.function(replica_train_step, jit_compile=True,
                                             autograph=False)
            replica_eval_step = tf.function(replica_eval_step, jit_compile=True,
                                            autograph=False)

        # Explicit tf.while_loops, no AutoGraph: nothing here depends on reading this file's
        # source at trace time (AutoGraph does, and breaks if the file changed since import).
        @tf.function(autograph=False)
        def train_steps(iterator, n):
            def body(i):
                images, labels = iterator.get_next()
                strategy.run(replica_train_step, args=_replica_slice(strategy, images, labels))
                self.step.assign_add(1)
                return (i + 1,)

            tf.while_loop(lambda i: i < n, body, (tf.constant(0, n.dtype),))
            return self.train_loss.result(), self.train_acc.result()

        @tf.function(autograph=False)
        def evaluate(dataset):
            iterator = iter(dataset)

            def body(batch):
                images, labels = batch.get_value()
                strategy.run(replica_eval_step, args=_replica_slice(strategy, images, labels))
                return (iterator.get_next_as_optional(),)

            tf.while_loop(lambda batch: batch.has_value(), body,
                          (iterator.get_next_as_optional(),))
            return self.eval_loss.result(), self.eval_acc.result()

        self._train_steps = train_steps
        self._evaluate = evaluate

    def train(self, iterator, n: int) -> tuple:
        loss, acc = self._train_steps(iterator, tf.constant(n, tf.int64))
        return float(loss), float(acc)

    def reset_train_metrics(self) -> None:
        self.train_loss.reset_state()
        self.train_acc.reset_state()

    def evaluate(self, dataset) -> tuple:
        self.eval_loss.reset_state()
        self.eval_acc.reset_state()
        loss, acc = self._evaluate(dataset)
        return float(loss), float(acc)


def _worker_checkpoint_dir(strategy, run: _RunDir) -> str:
    """The chief's checkpoint dir, or a private temporary one on other workers (every worker
    must save, since saving reads distributed variables, but only the chief's is kept)."""
    if run.chief:
        return run.checkpoints
    resolver = strategy.cluster_resolver
    task = f"{resolver.task_type}{resolver.task_id}" if resolver else "worker"
    return tempfile.mkdtemp(prefix=f"keras_resnet_{task}_")


def train(recipe, run_dir: str, strategy=None, *, data_dir: str | None = None,
          verbose: int = 1) -> dict:
    """Trains `recipe` in `run_dir`, resuming from its last checkpoint; returns the summary.

    recipe: a `Recipe`, a recipe name, or None to take run_dir's recipe.json.
    strategy: a `tf.distribute.Strategy`, a name for `train.strategies.make_strategy`
        ('auto', 'one_device', 'mirrored', 'multi_worker', 'tpu'), or None ('auto'). Made
        first, as MultiWorkerMirroredStrategy requires.
    data_dir: TFDS data dir for `train.data.load` (default: $KERAS_RESNET_DATA or
        ~/tensorflow_datasets).
    verbose: 1 shows a Keras Progbar (chief only), 0 is silent.

    Returns (and writes to summary.json) a dict with test_accuracy, test_loss, steps,
    train_seconds, images_per_sec, params and the run's settings. A finished run directory
    returns its summary at once. `recipe.deterministic` turns on TensorFlow op determinism
    for the whole process.
    """
    strategy = _make_strategy(strategy)
    run = _RunDir(run_dir, strategies_lib.is_chief(strategy))
    recipe = run.resolve_recipe(recipe)
    if os.path.exists(run.summary) and os.path.exists(run.model):
        with open(run.summary) as f:
            summary = json.load(f)
        logging.info("Run %s is complete (%d steps); returning its summary.", run.path,
                     summary.get("steps", -1))
        return summary

    replicas = strategy.num_replicas_in_sync
    if recipe.batch_size % replicas:
        raise ValueError(
            f"batch_size {recipe.batch_size} is not divisible by the {replicas} replicas of "
            f"{strategies_lib.describe(strategy)}: pick a multiple of {replicas}."
        )
    policy = strategies_lib.precision_policy(recipe.mixed_precision, strategy)
    jit = strategies_lib.use_xla(recipe.xla, strategy)
    sync_bn = replicas > 1 if recipe.synchronized_bn is None else recipe.synchronized_bn
    if recipe.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(recipe.seed)
    logging.info("Training %s (%s) on %s, %s, xla=%s, synchronized_bn=%s, in %s",
                 recipe.model, recipe.name, strategies_lib.describe(strategy), policy, jit,
                 sync_bn, run.path)

    with _dtype_policy(policy):
        return _train(recipe, run, strategy, policy, jit, sync_bn, data_dir, verbose)


def _train(recipe, run, strategy, policy, jit, sync_bn, data_dir, verbose):
    global_batch = recipe.batch_size
    total = recipe.total_steps
    eval_every = recipe.evaluation_interval
    train_examples, info = data_lib.load(recipe.dataset, recipe.train_split, data_dir=data_dir)
    eval_examples, _ = data_lib.load(recipe.dataset, recipe.eval_split, data_dir=data_dir)
    if recipe.eval_split == recipe.test_split:
        test_examples = eval_examples
    else:
        test_examples, _ = data_lib.load(recipe.dataset, recipe.test_split, data_dir=data_dir)

    def input_pipeline(examples, training):
        return data_lib.pipeline(
            examples, info, training=training, batch_size=global_batch, augment=recipe.augment,
            seed=recipe.seed, image_size=recipe.image_size, shuffle_buffer=recipe.shuffle_buffer,
        )

    train_ds = input_pipeline(train_examples, True)
    eval_ds = input_pipeline(eval_examples, False)
    test_ds = eval_ds if test_examples is eval_examples else input_pipeline(test_examples, False)

    with strategy.scope():
        model = build_model(recipe, info, sync_bn)
        optimizer = make_optimizer(recipe, policy)
        optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    best_error = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="best_eval_error")
    bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_since_best")
    train_iterator = iter(train_ds)

    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, iterator=train_iterator, step=step, elapsed=elapsed,
        best_error=best_error, bad_evals=bad_evals,
    )
    run.save_recipe(recipe)
    if run.chief:
        os.makedirs(run.checkpoints, exist_ok=True)
        run.remove_partial_checkpoints()
    ckpt_dir = _worker_checkpoint_dir(strategy, run)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=recipe.keep_checkpoints,
                                         step_counter=step)
    latest = tf.train.latest_checkpoint(run.checkpoints)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("Resumed from %s (step %d).", latest, int(step.numpy()))
    start_step = int(step.numpy())
    rows = run.read_metrics(up_to_step=start_step)
    if run.chief:
        os.makedirs(run.logs, exist_ok=True)
        run.rewrite_metrics(rows)  # drops rows written after the checkpoint we resume from

    steps_fn = Steps(model, optimizer, strategy, recipe, info.num_classes, jit=jit, step=step)
    run_eval = steps_fn.evaluate

    # --------------------------------------------------------------------------- loop
    writer = tf.summary.create_file_writer(run.logs) if run.chief else \
        tf.summary.create_noop_writer()
    progbar = keras.utils.Progbar(total, stateful_metrics=["loss", "accuracy", "lr"],
                                  verbose=1 if (verbose and run.chief) else 0)
    if start_step:
        progbar.update(start_step)
    session_start = time.perf_counter()
    elapsed_at_start = float(elapsed.numpy())
    train_time, train_images, calls = 0.0, 0, 0
    last_eval = None

    def next_event(s):
        stops = [total] + [(s // k + 1) * k for k in (recipe.log_every, eval_every,
                                                      recipe.checkpoint_every)]
        return min(min(stops), s + recipe.steps_per_execution)

    s = start_step
    while s < total:
        n = next_event(s) - s
        t0 = time.perf_counter()
        loss, acc = steps_fn.train(train_iterator, n)
        dt = time.perf_counter() - t0
        s += n
        calls += 1
        if calls > 1 or s >= total:  # the first call traces: keep it out of images/s
            train_time += dt
            train_images += n * global_batch
        lr = _scalar(optimizer.learning_rate)
        progbar.update(s, [("loss", loss), ("accuracy", acc), ("lr", lr)])
        row = {}
        if s % recipe.log_every == 0 or s == total:
            ips = train_images / train_time if train_time else None
            row.update(step=s, lr=float(f"{lr:.6g}"), train_loss=loss, train_accuracy=acc,
                       images_per_sec=round(ips, 1) if ips else None)
            steps_fn.reset_train_metrics()
            _log_scalars(writer, s, {"train/loss": loss, "train/accuracy": acc,
                                     "learning_rate": lr, "train/images_per_sec": ips})
        if s % eval_every == 0 or s == total:
            e_loss, e_acc = run_eval(eval_ds)
            last_eval = (s, e_loss, e_acc)
            row.update(step=s, eval_loss=e_loss, eval_accuracy=e_acc)
            _log_scalars(writer, s, {"eval/loss": e_loss, "eval/accuracy": e_acc})
            if run.chief and verbose:
                logging.info("step %d: eval loss %.4f, accuracy %.4f", s, e_loss, e_acc)
            if recipe.lr_schedule == "plateau":
                _plateau_update(recipe, optimizer, 1.0 - e_acc, best_error, bad_evals)
        if row:
            row["elapsed_s"] = round(elapsed_at_start + time.perf_counter() - session_start, 1)
            rows.append(row)
            run.append_metrics(row)
        if s % recipe.checkpoint_every == 0 or s == total:
            elapsed.assign(elapsed_at_start + time.perf_counter() - session_start)
            manager.save(checkpoint_number=s)
    writer.flush()

    # ------------------------------------------------------------------------- finish
    if last_eval and last_eval[0] == total and test_ds is eval_ds:
        test_loss, test_acc = last_eval[1:]
    else:
        test_loss, test_acc = run_eval(test_ds)
    session_seconds = time.perf_counter() - session_start
    summary = {
        "recipe": recipe.name,
        "model": recipe.model,
        "dataset": recipe.dataset,
        "test_accuracy": test_acc,
        "test_error": 1.0 - test_acc,
        "test_loss": test_loss,
        "steps": total,
        "epochs": round(total * global_batch / info.num_examples, 2) if info.num_examples else None,
        "global_batch_size": global_batch,
        "replicas": strategy.num_replicas_in_sync,
        "strategy": strategies_lib.describe(strategy),
        "precision": policy,
        "xla": jit,
        "synchronized_bn": sync_bn,
        "params": int(model.count_params()),
        "weights_sha256": weights_digest(model),
        "resumed_from_step": start_step,
        "train_seconds": round(elapsed_at_start + session_seconds, 1),
        "session_seconds": round(session_seconds, 1),
        "images_per_sec": round(train_images / train_time, 1) if train_time else None,
        "run_dir": run.path,
        "model_path": run.model,
    }
    if run.chief:
        with _atomic(run.model) as tmp:
            model.save(tmp)
        boundaries = recipe.boundaries if recipe.lr_schedule == "piecewise" else ()
        plot_curves(rows, run.curves, boundaries)
        run.write_text(run.summary, json.dumps(summary, indent=2) + "\n")
    else:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    logging.info("Finished %s: test accuracy %.4f, %s images/s, %.0f s.", run.path, test_acc,
                 summary["images_per_sec"], summary["train_seconds"])
    return summary


def _plateau_update(recipe, optimizer, error, best_error, bad_evals):
    """Divides the learning rate by 1/lr_decay after `plateau_patience` evaluations without
    `plateau_min_delta` improvement of the evaluation error (paper sec. 3.4)."""
    if error < float(best_error.numpy()) - recipe.plateau_min_delta:
        best_error.assign(error)
        bad_evals.assign(0)
        return
    bad_evals.assign_add(1)
    if int(bad_evals.numpy()) >= recipe.plateau_patience:
        lr = _scalar(optimizer.learning_rate) * recipe.lr_decay
        optimizer.learning_rate = lr
        bad_evals.assign(0)
        best_error.assign(min(error, float(best_error.numpy())))
        logging.info("Evaluation error plateaued at %.4f: learning rate now %g.", error, lr)
