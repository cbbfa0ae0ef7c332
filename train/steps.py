"""The compiled steps of the one training loop: optimizer, replica step, loops over batches.

Every worker reads the same global batch from one stateless, checkpointable `tf.data` iterator
and each replica takes its slice (`replica_slice`), so a run gives the same numbers on one
device, on N replicas and on N workers up to the rounding of all-reduce and synchronized
BatchNorm. The loss is `tf.nn.compute_average_loss` over the global batch; the Keras optimizer
all-reduces the gradients (stock `fit` fails under MultiWorkerMirroredStrategy,
keras-team/keras#20585).

Phases (transfer learning, `Recipe.phase_boundaries`): before the head-only phase's boundary
only the classifier (`HEAD_LAYERS`) trains, the backbone frozen and its BatchNorm layers in
inference mode; then the whole net, with BatchNorm frozen (`trainable=False`: inference mode,
scale and offset fixed) when the recipe says `freeze_bn`. `Steps` picks the phase from its own
step counter, sets the layers' `trainable` flags (`set_phase`) and runs that phase's compiled
loop; one `train` call never crosses a boundary (the loop stops there).
"""

import functools

import keras
import tensorflow as tf

from train import (
    fused_batch_norm,  # noqa: F401  (registers the fused BatchNorm kernel)
    schedules,
)


def make_optimizer(recipe, policy: str) -> keras.optimizers.Optimizer:
    """SGD with the recipe's momentum and lr schedule; wrapped in a LossScaleOptimizer for
    float16. Weight decay is not here: it is an L2 term of the loss (see `Steps`)."""
    if recipe.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}: use 'sgd'.")
    optimizer = keras.optimizers.SGD(learning_rate=schedules.learning_rate(recipe),
                                     momentum=recipe.momentum, nesterov=recipe.nesterov)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


HEAD_LAYERS = ("predictions",)  # the classifier, in keras.applications' naming
PHASES = ("head", "whole")


def set_phase(model, phase: str, freeze_bn: bool) -> None:
    """Sets `model`'s layers' `trainable` flags for `phase`: 'head' trains `HEAD_LAYERS` alone
    (every other layer, BatchNorm included, frozen: inference mode); 'whole' trains every layer
    except BatchNorm when `freeze_bn`."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {PHASES}.")
    if phase == "head" and not any(layer.name in HEAD_LAYERS for layer in model.layers):
        raise ValueError(f"model {model.name!r} has no classifier layer named {HEAD_LAYERS}: "
                         "a head-only phase needs one (include_top models have 'predictions').")
    for layer in model.layers:
        if phase == "head":
            layer.trainable = layer.name in HEAD_LAYERS
        else:
            layer.trainable = not (freeze_bn and isinstance(layer, keras.layers.BatchNormalization))


def replica_slice(strategy, images, labels):
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
    """The compiled steps for one model, optimizer and strategy.

    `train(iterator, n)` runs n optimizer steps on global batches `(images (B, H, W, C), labels
    (B,))` from a `tf.data` iterator, increments `step` and returns the running (loss,
    accuracy) since `reset_train_metrics`. `evaluate(dataset)` returns (loss, accuracy) over a
    finite dataset of global batches.

    Replica step: cross-entropy (label-smoothed when the recipe says so) averaged over the
    global batch, plus the L2 weight decay `wd / 2 * ||w||^2` on conv and dense kernels (Caffe's
    weight decay; BatchNorm parameters and biases are not decayed), then `optimizer.apply`.

    `recipe` is the run's plan (`Recipe.resolved`): its `phase_boundaries` and `freeze_bn`
    decide which variables each step trains (see the module docstring). The optimizer must be
    built for every variable either phase trains (it is built here for the model's variables if
    it is not yet): restore checkpoints after that.
    """

    def __init__(self, model, optimizer, strategy, recipe, num_classes, *, jit=False,
                 step=None):
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        with strategy.scope():
            self.train_loss = keras.metrics.Mean(name="train_loss")
            self.train_acc = keras.metrics.SparseCategoricalAccuracy(name="train_accuracy")
            self.eval_loss = keras.metrics.Mean(name="eval_loss")
            self.eval_acc = keras.metrics.SparseCategoricalAccuracy(name="eval_accuracy")
        self.step = step if step is not None else tf.Variable(0, dtype=tf.int64, trainable=False)
        self.global_batch = recipe.batch_size
        self.num_classes = num_classes
        self.smoothing = recipe.label_smoothing
        self.weight_decay = recipe.weight_decay
        self.boundaries = tuple(recipe.phase_boundaries)
        self.freeze_bn = recipe.freeze_bn
        self.jit = jit
        if (self.boundaries or self.freeze_bn) and not optimizer.built:
            with strategy.scope():
                optimizer.build(model.trainable_variables)
        eval_step = self._replica_eval_step
        if jit:
            eval_step = tf.function(eval_step, jit_compile=True, autograph=False)
        self._eval_step = eval_step
        # Explicit tf.while_loops, no AutoGraph: nothing depends on reading this file's source
        # at trace time (AutoGraph does, and breaks if the file changed since import).
        self._train_steps = {}  # phase -> its compiled loop, traced with that phase's flags
        self._evaluate = tf.function(self._eval_loop, autograph=False)

    def phase_at(self, step: int) -> str:
        """'head' before the first phase boundary, else 'whole'."""
        return "head" if self.boundaries and step < self.boundaries[0] else "whole"

    def _compiled(self, phase):
        if phase not in self._train_steps:
            train_step = self._replica_train_step
            if self.jit:
                train_step = tf.function(train_step, jit_compile=True, autograph=False)
            self._train_steps[phase] = tf.function(
                functools.partial(self._train_loop, train_step), autograph=False)
        return self._train_steps[phase]

    def _per_example_loss(self, labels, probs):
        if self.smoothing:
            onehot = tf.one_hot(labels, self.num_classes)
            return keras.losses.categorical_crossentropy(onehot, probs,
                                                         label_smoothing=self.smoothing)
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def _replica_train_step(self, images, labels):
        variables = self.model.trainable_variables  # the phase's, read at trace time
        decay_vars = [v for v in variables if v.path.endswith("kernel")]
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            losses = self._per_example_loss(labels, probs)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=self.global_batch)
            if self.weight_decay and decay_vars:
                # Gradient wd * w, summed over replicas by the optimizer (hence the scaling).
                l2 = tf.add_n([tf.nn.l2_loss(tf.convert_to_tensor(v)) for v in decay_vars])
                loss += tf.nn.scale_regularization_loss(self.weight_decay * l2)
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.train_loss.update_state(losses)
        self.train_acc.update_state(labels, probs)

    def _replica_eval_step(self, images, labels):
        probs = self.model(images, training=False)
        self.eval_loss.update_state(keras.losses.sparse_categorical_crossentropy(labels, probs))
        self.eval_acc.update_state(labels, probs)

    def _train_loop(self, train_step, iterator, n):
        def body(i):
            images, labels = iterator.get_next()
            self.strategy.run(train_step,
                              args=replica_slice(self.strategy, images, labels))
            self.step.assign_add(1)
            return (i + 1,)

        tf.while_loop(lambda i: i < n, body, (tf.constant(0, n.dtype),))
        return self.train_loss.result(), self.train_acc.result()

    def _eval_loop(self, dataset):
        iterator = iter(dataset)

        def body(batch):
            images, labels = batch.get_value()
            self.strategy.run(self._eval_step, args=replica_slice(self.strategy, images, labels))
            return (iterator.get_next_as_optional(),)

        tf.while_loop(lambda batch: batch.has_value(), body, (iterator.get_next_as_optional(),))
        return self.eval_loss.result(), self.eval_acc.result()

    def train(self, iterator, n: int) -> tuple:
        """n steps in the phase of the current step (ValueError if they would cross a phase
        boundary); returns the running (loss, accuracy)."""
        phase = "whole"
        if self.boundaries or self.freeze_bn:
            step = int(self.step.numpy())
            crossed = [b for b in self.boundaries if step < b < step + n]
            if crossed:
                raise ValueError(f"train(n={n}) from step {step} would cross the phase boundary "
                                 f"at step {crossed[0]}: stop there and call train again (stop "
                                 "at every step of recipe.phase_boundaries).")
            phase = self.phase_at(step)
            set_phase(self.model, phase, self.freeze_bn)
        loss, acc = self._compiled(phase)(iterator, tf.constant(n, tf.int64))
        return float(loss), float(acc)

    def reset_train_metrics(self) -> None:
        self.train_loss.reset_state()
        self.train_acc.reset_state()

    def evaluate(self, dataset) -> tuple:
        self.eval_loss.reset_state()
        self.eval_acc.reset_state()
        loss, acc = self._evaluate(dataset)
        return float(loss), float(acc)
