"""Training recipes as data: frozen dataclasses, resolved by name plus overrides.

    recipe = recipes.resolve("paper_cifar", model="resnet56", dataset="fashion_mnist", scale=0.05)
    recipe.to_json()  # what the run directory stores as recipe.json

`PAPER_CIFAR` is sec. 4.2 of He et al. (2016); `PAPER_CIFAR110` adds its ResNet-110 warm-up;
`PAPER_IMAGENET` is sec. 3.4; `MODERN` is Goyal et al. (2017) linear scaling + warm-up with
cosine decay (Loshchilov & Hutter, 2017) and label smoothing (Szegedy et al., 2016); `SMOKE` is
the paper's CIFAR recipe shortened to 400 steps of ResNet-20 on Fashion-MNIST (a few minutes on
two CPU cores).

`scale` shortens (or lengthens) a recipe: it multiplies every iteration count of the schedule
(`steps`, `lr_boundaries`, and `warmup_steps` unless `warmup_scales` is off) and nothing else,
so `scale=0.05` turns the paper's 32k/48k/64k into 1600/2400/3200.
"""

import dataclasses
import json
import math
import typing

import keras
import tensorflow as tf

LR_SCHEDULES = ("piecewise", "cosine", "plateau", "constant")
WARMUPS = ("constant", "linear")
OPTIMIZERS = ("sgd",)
AUGMENTATIONS = ("cifar", "imagenet", "none")
PRECISIONS = ("off", "auto", "float32", "mixed_float16", "mixed_bfloat16")
XLA = ("off", "on", "auto")
SHORTCUTS = ("default", "A", "B", "C")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run's numbers. Defaults are the paper's CIFAR recipe.

    Data: `dataset` is a `train.data` name; the model trains on `train_split` and is evaluated
    during training on `eval_split` (TFDS split strings; the paper's 45k/5k split is
    train_split='train[:45000]', eval_split='train[45000:]'); the final accuracy is on
    `test_split`. `augment` picks `train.data.pipeline`'s augmentation; `image_size` its size.
    Optimization: SGD (`momentum`, `nesterov`) with `lr` at global batch `batch_size`, or
    `lr * batch_size / lr_base_batch` when `lr_base_batch` > 0 (linear scaling rule).
    `lr_schedule`: 'piecewise' (multiply by `lr_decay` at each of `lr_boundaries`), 'cosine'
    (to 0 at `steps`), 'plateau' (multiply by `lr_decay` when the evaluation error has not
    improved by `plateau_min_delta` for `plateau_patience` evaluations), 'constant'.
    `warmup_steps` first steps use 'constant' `warmup_lr` (the paper's ResNet-110) or a
    'linear' ramp from `warmup_lr` to the peak; `warmup_scales` off keeps `warmup_steps` as
    it is under `scale` (capped at a tenth of the run). `weight_decay` is an L2 penalty
    `weight_decay / 2 * ||w||^2` on conv and dense kernels only (Caffe's weight_decay).
    Model: `bn_momentum` is BatchNorm's moving-average momentum (0.9, PyTorch's default:
    Keras' 0.99 lags the weights in short runs, so evaluation in inference mode suffers);
    `zero_init_residual` starts each residual branch's last BN scale at 0 (not the paper's).
    `shortcut` 'default' (the variant's: A for CIFAR nets, B for ImageNet nets) or
    'A', 'B', 'C' (sec. 3.3); `synchronized_bn` None: synchronized with several replicas.
    `mixed_precision` 'off'/'float32', 'auto' (see `train.strategies.precision_policy`),
    'mixed_float16', 'mixed_bfloat16'; `xla` 'off', 'on', 'auto' (on for GPU/TPU).
    Run: `eval_every` (0: ten evaluations per run), `checkpoint_every`, `log_every` in steps,
    `keep_checkpoints` kept; `steps_per_execution` steps per `tf.function` call (TPU: more);
    `deterministic` enables TF op determinism (bitwise resume and reruns).
    """

    name: str = "paper_cifar"
    model: str = "resnet20"
    dataset: str = "cifar10"
    # data
    train_split: str = "train"
    eval_split: str = "test"
    test_split: str = "test"
    augment: str = "cifar"
    image_size: typing.Optional[int] = None
    shuffle_buffer: int = 10_000
    # optimization
    batch_size: int = 128
    steps: int = 64_000
    scale: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    lr: float = 0.1
    lr_base_batch: int = 0
    lr_schedule: str = "piecewise"
    lr_boundaries: tuple = (32_000, 48_000)
    lr_decay: float = 0.1
    warmup_steps: int = 0
    warmup: str = "constant"
    warmup_lr: float = 0.01
    warmup_scales: bool = True
    plateau_patience: int = 3
    plateau_min_delta: float = 0.001
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    # model and numerics
    shortcut: str = "default"
    synchronized_bn: typing.Optional[bool] = None
    bn_momentum: float = 0.9
    zero_init_residual: bool = False
    mixed_precision: str = "off"
    xla: str = "off"
    # run
    seed: int = 0
    deterministic: bool = True
    eval_every: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 100
    steps_per_execution: int = 1

    def __post_init__(self):
        if isinstance(self.lr_boundaries, list):
            object.__setattr__(self, "lr_boundaries", tuple(self.lr_boundaries))
        _validate(self)

    # ---------------------------------------------------------------- derived values

    @property
    def total_steps(self) -> int:
        """`steps * scale`, the iteration at which training stops (at least 1)."""
        return max(1, round(self.steps * self.scale))

    @property
    def boundaries(self) -> tuple:
        """`lr_boundaries * scale`, each at least 1."""
        return tuple(max(1, round(b * self.scale)) for b in self.lr_boundaries)

    @property
    def warmup_iterations(self) -> int:
        """`warmup_steps * scale`, at least 1 when there is a warm-up; with `warmup_scales`
        off, `warmup_steps` (at most a tenth of the run, at least 1)."""
        if not self.warmup_steps:
            return 0
        if not self.warmup_scales:
            return max(1, min(self.warmup_steps, self.total_steps // 10))
        return max(1, round(self.warmup_steps * self.scale))

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: `lr`, linearly scaled when `lr_base_batch` > 0."""
        if self.lr_base_batch:
            return self.lr * self.batch_size / self.lr_base_batch
        return self.lr

    @property
    def evaluation_interval(self) -> int:
        """`eval_every`, or a tenth of the run when it is 0."""
        return self.eval_every or max(1, self.total_steps // 10)

    def learning_rate(self):
        """The optimizer's learning rate: a `LearningRateSchedule` of the optimizer's
        iteration count, or a float for 'plateau' (the loop divides it)."""
        peak = self.peak_lr
        if self.lr_schedule == "plateau":
            return peak
        if self.lr_schedule == "cosine":
            return WarmupCosineDecay(
                peak, self.total_steps, self.warmup_iterations, self.warmup_lr, self.warmup
            )
        boundaries = self.boundaries if self.lr_schedule == "piecewise" else ()
        values = tuple(float(f"{peak * self.lr_decay**i:.12g}") for i in range(len(boundaries) + 1))
        return WarmupPiecewiseConstant(
            boundaries, values, self.warmup_iterations, self.warmup_lr, self.warmup
        )

    # ------------------------------------------------------------------ serialization

    def replace(self, **overrides) -> "Recipe":
        """A copy with `overrides` (values may be strings, as from flags)."""
        return dataclasses.replace(self, **_coerce_all(overrides))

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        unknown = sorted(set(values) - FIELDS.keys())
        if unknown:
            raise ValueError(
                f"unknown recipe field(s) {unknown}: known fields are {sorted(FIELDS)}."
            )
        return cls(**_coerce_all(values))

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(json.loads(text))

    def diff(self, other: "Recipe") -> dict:
        """{field: (self's value, other's value)} for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def _validate(r: Recipe) -> None:
    for field, choices in (
        ("lr_schedule", LR_SCHEDULES), ("warmup", WARMUPS), ("optimizer", OPTIMIZERS),
        ("augment", AUGMENTATIONS), ("mixed_precision", PRECISIONS), ("xla", XLA),
        ("shortcut", SHORTCUTS),
    ):
        value = getattr(r, field)
        _check(value in choices, f"recipe field {field}={value!r} is not one of {choices}.")
    for field in ("batch_size", "steps", "checkpoint_every", "keep_checkpoints", "log_every",
                  "steps_per_execution", "plateau_patience"):
        value = getattr(r, field)
        _check(isinstance(value, int) and value >= 1,
               f"recipe field {field} must be a positive int, got {value!r}.")
    for field in ("warmup_steps", "eval_every", "lr_base_batch", "shuffle_buffer"):
        value = getattr(r, field)
        _check(isinstance(value, int) and value >= 0,
               f"recipe field {field} must be an int >= 0, got {value!r}.")
    for field in ("name", "model", "dataset", "train_split", "eval_split", "test_split"):
        value = getattr(r, field)
        _check(isinstance(value, str) and value.strip(),
               f"recipe field {field} must be a non-empty string, got {value!r}.")
    _check(r.scale > 0, f"recipe field scale must be > 0, got {r.scale!r}.")
    _check(r.lr > 0, f"recipe field lr must be > 0, got {r.lr!r}.")
    _check(0 < r.lr_decay <= 1, f"recipe field lr_decay must be in (0, 1], got {r.lr_decay!r}.")
    _check(0 <= r.momentum < 1, f"recipe field momentum must be in [0, 1), got {r.momentum!r}.")
    _check(0 <= r.bn_momentum < 1,
           f"recipe field bn_momentum must be in [0, 1), got {r.bn_momentum!r}.")
    _check(r.weight_decay >= 0, f"recipe field weight_decay must be >= 0, got {r.weight_decay!r}.")
    _check(0 <= r.label_smoothing < 1,
           f"recipe field label_smoothing must be in [0, 1), got {r.label_smoothing!r}.")
    b = r.lr_boundaries
    _check(all(isinstance(x, int) and x > 0 for x in b) and list(b) == sorted(set(b)),
           f"recipe field lr_boundaries must be increasing positive ints, got {b!r}.")
    _check(r.lr_schedule != "plateau" or not r.warmup_steps,
           "lr_schedule='plateau' has no warm-up: set warmup_steps=0.")
    sb = r.boundaries
    _check(list(sb) == sorted(set(sb)),
           f"scale={r.scale} merges lr_boundaries {b} into {sb}: use a larger scale.")


# ------------------------------------------------------------------ coercion from strings


def _coerce(name: str, value):
    """Converts a flag string (or a JSON value) to the type of recipe field `name`."""
    if name not in FIELDS:
        raise ValueError(f"unknown recipe field {name!r}: known fields are {sorted(FIELDS)}.")
    default = FIELDS[name].default
    optional = typing.get_origin(FIELDS[name].type) is typing.Union
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "auto", ""):
            return None
        try:
            if isinstance(default, bool) or FIELDS[name].type == typing.Optional[bool]:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(default, tuple):
                return tuple(int(float(v)) for v in text.strip("()[]").split(",") if v.strip())
            if isinstance(default, int) or FIELDS[name].type == typing.Optional[int]:
                number = float(text)
                if number != int(number):
                    raise ValueError
                return int(number)
            if isinstance(default, float):
                return float(text)
        except ValueError:
            kind = type(default).__name__ if default is not None else str(FIELDS[name].type)
            raise ValueError(
                f"recipe field {name}={value!r} is not a valid {kind} (default {default!r})."
            ) from None
        if name == "xla" and text.lower() in ("true", "false", "1", "0"):
            return "on" if text.lower() in ("true", "1") else "off"
        return text
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name == "xla" and isinstance(value, bool):
        return "on" if value else "off"
    return value


def _coerce_all(values: dict) -> dict:
    return {k: _coerce(k, v) for k, v in values.items()}


# --------------------------------------------------------------------------- the recipes

PAPER_CIFAR = Recipe()
"""He et al. (2016) sec. 4.2: batch 128, SGD momentum 0.9, lr 0.1 divided by 10 at 32k and
48k iterations, stop at 64k, weight decay 1e-4, He init (the models' default), pad-crop-flip.
For the paper's 45k/5k train/val split, override `train_split="train[:45000]",
eval_split="train[45000:]"`."""

PAPER_CIFAR110 = dataclasses.replace(
    PAPER_CIFAR, name="paper_cifar110", model="resnet110", warmup_steps=400, warmup_lr=0.01,
    warmup_scales=False,
)
"""Sec. 4.2 for ResNet-110: lr 0.01 until training error is below 80% (about 400 iterations),
then the paper's CIFAR schedule. The warm-up is what it takes to leave the start, not a part
of the schedule: shorter runs keep its 400 iterations (at most a tenth of the run)."""

PAPER_IMAGENET = Recipe(
    name="paper_imagenet", model="resnet50", dataset="imagenet2012", augment="imagenet",
    image_size=224, batch_size=256, steps=600_000, lr_schedule="plateau", lr_boundaries=(),
    plateau_patience=5, eval_every=5_000, checkpoint_every=5_000, log_every=500,
    shuffle_buffer=2_048,
)
"""He et al. (2016) sec. 3.4: batch 256, SGD momentum 0.9, lr 0.1 divided by 10 when the
error plateaus (here: no 0.1% gain in validation error over 5 evaluations, 25k iterations),
up to 600k iterations, weight decay 1e-4, scale augmentation [256, 480]."""

MODERN = Recipe(
    name="modern", model="resnet56", dataset="cifar10", batch_size=512, steps=20_000,
    lr=0.1, lr_base_batch=256, lr_schedule="cosine", lr_boundaries=(), warmup_steps=500,
    warmup="linear", warmup_lr=0.0, nesterov=True, label_smoothing=0.1,
    mixed_precision="auto", xla="auto", deterministic=False,
)
"""Goyal et al. (2017): lr 0.1 per 256 examples, scaled linearly with the global batch,
linear warm-up (about 5 epochs), weight decay 1e-4; then cosine decay to 0, Nesterov momentum,
label smoothing 0.1, mixed precision and XLA where they help."""

SMOKE = dataclasses.replace(
    PAPER_CIFAR, name="smoke", dataset="fashion_mnist", scale=400 / 64_000,
    checkpoint_every=100, eval_every=200, log_every=20,
)
"""The paper's CIFAR recipe shortened to 400 iterations (lr 0.1, /10 at 200 and 300) of
ResNet-20 on Fashion-MNIST: a few minutes on two CPU cores."""

RECIPES = {r.name: r for r in (PAPER_CIFAR, PAPER_CIFAR110, PAPER_IMAGENET, MODERN, SMOKE)}


def resolve(name, /, **overrides) -> Recipe:
    """The recipe `name` (a key of RECIPES, or a Recipe) with `overrides` applied.

    Overrides may be typed values or strings (as from flags): `resolve("paper_cifar",
    steps="2000", lr_boundaries="1000,1500")`.
    """
    if isinstance(name, Recipe):
        base = name
    else:
        key = str(name).strip().lower().replace("-", "_")
        if key not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}: use one of {sorted(RECIPES)}.")
        base = RECIPES[key]
    return base.replace(**overrides) if overrides else base


# -------------------------------------------------------------------- learning rate schedules


def _warmup_lr(step, warmup_steps, warmup_lr, warmup, peak):
    if warmup == "linear":
        return warmup_lr + (peak - warmup_lr) * step / float(warmup_steps)
    return tf.cast(warmup_lr, tf.float32) + 0.0 * step


@keras.saving.register_keras_serializable(package="keras_resnet_train")
class WarmupPiecewiseConstant(keras.optimizers.schedules.LearningRateSchedule):
    """`values[i]` from iteration `boundaries[i-1]` on (the paper's "divide by 10 at 32k":
    iterations 0..31999 use values[0], 32000.. use values[1]), after `warmup_steps` iterations
    at a constant `warmup_lr` ('constant', sec. 4.2 for ResNet-110) or a linear ramp from
    `warmup_lr` to values[0] ('linear').
    step: the optimizer's iteration count (0 for the first update)."""

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
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up for `warmup_steps` iterations (linear from `warmup_lr` to `peak_lr`, or constant
    `warmup_lr`), then `peak_lr * (1 + cos(pi * t)) / 2` with t going from 0 to 1 at
    `total_steps` (Loshchilov & Hutter, 2017, without restarts)."""

    def __init__(self, peak_lr, total_steps, warmup_steps=0, warmup_lr=0.0, warmup="linear"):
        if total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})."
            )
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)
        self.warmup = warmup

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        t = (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps)
        t = tf.clip_by_value(t, 0.0, 1.0)
        lr = 0.5 * self.peak_lr * (1.0 + tf.cos(math.pi * t))
        if self.warmup_steps:
            warm = _warmup_lr(step, self.warmup_steps, self.warmup_lr, self.warmup, self.peak_lr)
            lr = tf.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr,
                "warmup": self.warmup}
