"""The compiled steps of the one training loop: optimizer, replica step, loops over batches.

Every worker reads the same global batch from one stateless, checkpointable `tf.data` iterator
and each replica takes its slice (`replica_slice`), so a run gives the same numbers on one
device, on N replicas and on N workers up to the rounding of all-reduce and synchronized
BatchNorm. The loss is `tf.nn.compute_average_loss` over the global batch; the Keras optimizer
all-reduces the gradients (stock `fit` fails under MultiWorkerMirroredStrategy,
keras-team/keras#20585).
"""

import keras
import tensorflow as tf

from train import fused_batch_norm  # noqa: F401  (registers the fused BatchNorm kernel)
from train import schedules


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
        self.decay_vars = [v for v in model.trainable_variables if v.path.endswith("kernel")]
        train_step, eval_step = self._replica_train_step, self._replica_eval_step
        if jit:
            train_step = tf.function(train_step, jit_compile=True, autograph=False)
            eval_step = tf.function(eval_step, jit_compile=True, autograph=False)
        self._train_step, self._eval_step = train_step, eval_step
        # Explicit tf.while_loops, no AutoGraph: nothing depends on reading this file's source
        # at trace time (AutoGraph does, and breaks if the file changed since import).
        self._train_steps = tf.function(self._train_loop, autograph=False)
        self._evaluate = tf.function(self._eval_loop, autograph=False)

    def _per_example_loss(self, labels, probs):
        if self.smoothing:
            onehot = tf.one_hot(labels, self.num_classes)
            return keras.losses.categorical_crossentropy(onehot, probs,
                                                         label_smoothing=self.smoothing)
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def _replica_train_step(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            losses = self._per_example_loss(labels, probs)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=self.global_batch)
            if self.weight_decay and self.decay_vars:
                # Gradient wd * w, summed over replicas by the optimizer (hence the scaling).
                l2 = tf.add_n([tf.nn.l2_loss(tf.convert_to_tensor(v)) for v in self.decay_vars])
                loss += tf.nn.scale_regularization_loss(self.weight_decay * l2)
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.train_loss.update_state(losses)
        self.train_acc.update_state(labels, probs)

    def _replica_eval_step(self, images, labels):
        probs = self.model(images, training=False)
        self.eval_loss.update_state(keras.losses.sparse_categorical_crossentropy(labels, probs))
        self.eval_acc.update_state(labels, probs)

    def _train_loop(self, iterator, n):
        def body(i):
            images, labels = iterator.get_next()
            self.strategy.run(self._train_step,
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
