"""Learning-rate schedules of the recipes, as Keras `LearningRateSchedule`s of the optimizer's
iteration count (0 for the first update).

    optimizer = keras.optimizers.SGD(learning_rate=schedules.learning_rate(recipe), ...)
"""

import math

import keras
import tensorflow as tf


def learning_rate(recipe):
    """The optimizer's learning rate for `recipe`: a `LearningRateSchedule`, or a float for
    'plateau' (the loop divides it when the evaluation error stops improving). A recipe with a
    head-only phase gets `HeadThen`: `head_peak_lr` during the head phase, then the recipe's
    schedule over the whole-net phase's steps."""
    if recipe.phase_boundaries:
        (head,) = recipe.phase_boundaries
        return HeadThen(head, recipe.head_peak_lr, _schedule(recipe, recipe.total_steps - head))
    return _schedule(recipe, recipe.total_steps)


def _schedule(recipe, total_steps):
    peak = recipe.peak_lr
    if recipe.lr_schedule == "plateau":
        return peak
    if recipe.lr_schedule in ("cosine", "linear"):
        return WarmupDecay(peak, total_steps, recipe.warmup_iterations, recipe.warmup_lr,
                           recipe.warmup, decay=recipe.lr_schedule)
    boundaries = recipe.boundaries if recipe.lr_schedule == "piecewise" else ()
    values = tuple(float(f"{peak * recipe.lr_decay**i:.12g}") for i in range(len(boundaries) + 1))
    return WarmupPiecewiseConstant(boundaries, values, recipe.warmup_iterations, recipe.warmup_lr,
                                   recipe.warmup)


def _warmup_lr(step, warmup_steps, warmup_lr, warmup, peak):
    if warmup == "linear":
        return warmup_lr + (peak - warmup_lr) * step / float(warmup_steps)
    return tf.cast(warmup_lr, tf.float32) + 0.0 * step


@keras.saving.register_keras_serializable(package="keras_resnet_train")
class WarmupPiecewiseConstant(keras.optimizers.schedules.LearningRateSchedule):
    """`values[i]` from iteration `boundaries[i-1]` on (the paper's "divide by 10 at 32k":
    iterations 0..31999 use values[0], 32000.. use values[1]), after `warmup_steps` iterations
    at a constant `warmup_lr` ('constant', sec. 4.2 for ResNet-110) or a linear ramp from
    `warmup_lr` to values[0] ('linear')."""

    def __init__(self, boundaries, values, warmup_steps=0, warmup_lr=0.0, warmup="constant"):
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"need len(values) == len(boundaries) + 1; got {len(values)} values for "
                f"boundaries {list(boundaries)}."
            )
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)
        self.warmup = warmup

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.values[0], tf.float32)
        for boundary, value in zip(self.boundaries, self.values[1:]):
            lr = tf.where(step >= boundary, tf.constant(value, tf.float32), lr)
        if self.warmup_steps:
            warm = _warmup_lr(step, self.warmup_steps, self.warmup_lr, self.warmup, self.values[0])
            lr = tf.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr,
                "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="keras_resnet_train")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up for `warmup_steps` iterations (linear from `warmup_lr` to `peak_lr`, or constant
    `warmup_lr`), then a decay to 0 at `total_steps`: 'cosine', `peak_lr * (1 + cos(pi t)) / 2`
    (Loshchilov & Hutter, 2017, without restarts), or 'linear', `peak_lr * (1 - t)`, with t going
    from 0 to 1 over the iterations after the warm-up."""

    def __init__(self, peak_lr, total_steps, warmup_steps=0, warmup_lr=0.0, warmup="linear",
                 decay="cosine"):
        if total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})."
            )
        if decay not in ("cosine", "linear"):
            raise ValueError(f"decay must be 'cosine' or 'linear'; got {decay!r}.")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)
        self.warmup = warmup
        self.decay = decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        t = (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps)
        t = tf.clip_by_value(t, 0.0, 1.0)
        if self.decay == "cosine":
            lr = 0.5 * self.peak_lr * (1.0 + tf.cos(math.pi * t))
        else:
            lr = self.peak_lr * (1.0 - t)
        if self.warmup_steps:
            warm = _warmup_lr(step, self.warmup_steps, self.warmup_lr, self.warmup, self.peak_lr)
            lr = tf.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr,
                "warmup": self.warmup, "decay": self.decay}


@keras.saving.register_keras_serializable(package="keras_resnet_train")
class HeadThen(keras.optimizers.schedules.LearningRateSchedule):
    """`head_lr` for the first `head_steps` iterations (the head-only phase), then `then` (a
    schedule) of the iterations since: the whole-net phase's warm-up and decay start where it
    starts."""

    def __init__(self, head_steps, head_lr, then):
        if isinstance(then, dict):
            then = keras.optimizers.schedules.deserialize(then)
        self.head_steps = int(head_steps)
        self.head_lr = float(head_lr)
        self.then = then

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        after = self.then(tf.maximum(step - self.head_steps, 0.0))
        return tf.where(step < self.head_steps, tf.constant(self.head_lr, tf.float32), after)

    def get_config(self):
        return {"head_steps": self.head_steps, "head_lr": self.head_lr,
                "then": keras.optimizers.schedules.serialize(self.then)}
