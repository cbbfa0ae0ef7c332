"""Training recipes as data: frozen dataclasses, resolved by name plus overrides.

    recipe = recipes.resolve("paper_cifar", model="resnet56", dataset="fashion_mnist", scale=0.05)
    recipe.to_json()  # what the run directory stores as recipe.json

`PAPER_CIFAR` is sec. 4.2 of He et al. (2016); `PAPER_CIFAR110` adds its ResNet-110 warm-up;
`PAPER_IMAGENET` is sec. 3.4; `MODERN` is Goyal et al. (2017) linear scaling + warm-up with
cosine decay (Loshchilov & Hutter, 2017) and label smoothing (Szegedy et al., 2016); `SMOKE` is
the paper's CIFAR schedule written out for 400 steps of ResNet-20 on Fashion-MNIST; `FAST` and
`QUICKSTART` are time-to-accuracy recipes for 2 CPU cores; `FINETUNE` starts from weights.

Every recipe states its own iteration counts, so `--steps=300` means 300 steps. `scale` (1.0 in
all of them) multiplies every iteration count of the schedule (`steps`, `lr_boundaries`, and
`warmup_steps` unless `warmup_scales` is off): 0.05 makes the paper's 32k/48k/64k 1600/2400/3200.

Data only: no TensorFlow or Keras (schedules: `train.schedules`; the fields' choices,
validation and coercion from strings: `recipe_fields`)."""

import dataclasses
import json
import math
import typing

from train.recipe_fields import (  # noqa: F401 (choices re-exported)
    AUGMENTATIONS,
    BAD_IMAGES,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    SHORTCUTS,
    STRATEGIES,
    WARMUPS,
    WEIGHTS_NORMALIZATIONS,
    XLA,
    coerce_all,
    parse_sets,
    recipe_warnings,
    scratch_drops,
    validate,
)
from train.recipe_fields import coerce as _coerce_field


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run's numbers. Defaults are the paper's CIFAR recipe.

    Data: `dataset` is a `train.data` name; the model trains on `train_split` and is evaluated
    during training on `eval_split` (TFDS split strings; the paper's 45k/5k split is
    train_split='train[:45000]', eval_split='train[45000:]'); the final accuracy is on
    `test_split`. `augment` picks the augmentation (`train.augment`), `erasing` the
    probability of random erasing after it; `image_size` the model's input size (None: the
    dataset's own, padded as its default view says; see `train.views.for_dataset`).
    `shuffle_buffer` is the shuffle buffer of datasets streamed from disk (those held in
    memory are fully shuffled each epoch).
    Optimization: SGD (`momentum`, `nesterov`) with `lr` at global batch `batch_size`, or
    `lr * batch_size / lr_base_batch` when `lr_base_batch` > 0 (linear scaling rule).
    `lr_schedule`: 'piecewise' (multiply by `lr_decay` at each of `lr_boundaries`), 'cosine'
    (to 0 at `steps`), 'linear' (straight down to 0 at `steps`), 'plateau' (multiply by
    `lr_decay` when the evaluation error has not improved by `plateau_min_delta` for
    `plateau_patience` evaluations), 'constant'.
    `warmup_steps` first steps use 'constant' `warmup_lr` (the paper's ResNet-110) or a 'linear'
    ramp from `warmup_lr` to the peak; `warmup_scales` off keeps `warmup_steps` as it is under
    `scale` (capped at a tenth of the run). `weight_decay`: L2 penalty `weight_decay / 2 *
    ||w||^2` on conv and dense kernels only (Caffe's). Model: `bn_momentum` is BatchNorm's
    moving-average momentum (0.9, PyTorch's default: Keras' 0.99 lags the weights in short runs,
    so evaluation in inference mode suffers); `zero_init_residual` starts each residual
    branch's last BN scale at 0 (not the paper's).
    `shortcut` 'default' (the variant's: A for CIFAR nets, B for ImageNet nets) or 'A', 'B', 'C'
    (sec. 3.3); `synchronized_bn` None: synchronized with several replicas.
    `mixed_precision` 'off'/'float32', 'auto' (see `train.strategies.precision_policy`),
    'mixed_float16', 'mixed_bfloat16'; `xla` 'off', 'on', 'auto' (on for GPU/TPU).
    Run: `eval_every` (0: ten evaluations per run), `checkpoint_every`, `log_every` in steps,
    `keep_checkpoints` kept; `steps_per_execution` steps per `tf.function` call (TPU: more);
    `deterministic` enables TF op determinism (bitwise resume and reruns).
    Transfer (`train.model`, `keras_resnet.weights.transfer`): `weights` 'none' (He init), a
    registry tag of the model ('imagenet', 'tv_in1k' ...) or a file (`.weights.h5`, `.h5`,
    `.safetensors`, `.pth`, a run's `model.keras`); `weights_normalization` 'auto' (the weight
    set's own: registry, the `.keras` model's layer, the converter's JSON sidecar) or a mode
    ('caffe', 'imagenet' = 'torch', 'tf') for a bare file; `crop_fraction` the evaluation
    view's centre crop (None: the weight set's). Phases: `head_steps` (or
    `head_epochs`) first steps train the classifier alone at `head_lr` (0: `lr`; constant),
    backbone frozen and BatchNorm in inference mode; the rest trains the whole net on the lr
    schedule, BatchNorm frozen throughout when `freeze_bn`. Length: `epochs` > 0 (and
    `warmup_epochs`, `head_epochs`) count passes over the training split: `resolved(n)` turns
    them into steps, `steps` then plays no part; `min_steps` stretches a short run (a small
    folder) to that many steps, all epoch counts by one factor. Folders: `bad_images` 'skip' or
    'fail' on undecodable files; `holdout` the fraction held out when a tree has no test split.
    """

    name: str = "paper_cifar"
    model: str = "resnet20"
    dataset: str = "cifar10"
    # data
    train_split: str = "train"
    eval_split: str = "test"
    test_split: str = "test"
    augment: str = "cifar"
    erasing: float = 0.0
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
    # transfer and phases
    weights: str = "none"
    weights_normalization: str = "auto"
    crop_fraction: typing.Optional[float] = None
    head_steps: int = 0
    head_epochs: float = 0.0
    head_lr: float = 0.0
    freeze_bn: bool = False
    epochs: float = 0.0
    warmup_epochs: float = 0.0
    min_steps: int = 0
    # folder trees
    bad_images: str = "skip"
    holdout: float = 0.2

    def __post_init__(self):
        if isinstance(self.lr_boundaries, list):
            object.__setattr__(self, "lr_boundaries", tuple(self.lr_boundaries))
        validate(self)

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
    def head_iterations(self) -> int:
        """`head_steps * scale` (at least 1 when there is a head phase): the head-only steps."""
        return max(1, round(self.head_steps * self.scale)) if self.head_steps else 0

    @property
    def phase_boundaries(self) -> tuple:
        """Steps where the phase changes: (head_iterations,) with a head-only phase, else ()."""
        return (self.head_iterations,) if self.head_steps else ()

    @property
    def head_peak_lr(self) -> float:
        """The head-only phase's learning rate: `head_lr` (0: `lr`), scaled as `peak_lr`."""
        return (self.head_lr or self.lr) * self.peak_lr / self.lr

    def resolved(self, num_train_examples: int) -> "Recipe":
        """The run's plan in steps, for a training split of `num_train_examples` images: `epochs`,
        `head_epochs` and `warmup_epochs` become `steps`, `head_steps` and `warmup_steps`
        (each rounded up, at least 1; the run at least one step longer than its head phase, the
        warm-up at most the whole-net phase less one step). weights='none' is a run from
        scratch: its plan has no head-only phase and no frozen BatchNorm, every layer trains
        from step 0 on the lr schedule (`warnings` says so). Self when nothing changes."""
        drop = scratch_drops(self)  # weights='none': from scratch, all layers from step 0
        r = self.replace(head_steps=0, head_epochs=0.0, freeze_bn=False) if drop else self
        if not (r.epochs or r.head_epochs or r.warmup_epochs):
            return r
        if not isinstance(num_train_examples, int) or num_train_examples < 1:
            raise ValueError(f"num_train_examples must be a positive int, got "
                             f"{num_train_examples!r}: the training split is empty or unknown.")
        per_epoch = num_train_examples / r.batch_size
        if r.epochs and r.epochs * per_epoch < r.min_steps:  # a small folder: more passes
            per_epoch = r.min_steps / r.epochs

        def steps(epochs, default):
            return max(1, math.ceil(epochs * per_epoch - 1e-9)) if epochs else default

        head = steps(r.head_epochs, r.head_steps)
        total = max(steps(r.epochs, r.steps), head + 1 if head else 1)
        warmup = steps(r.warmup_epochs, r.warmup_steps)
        if warmup and r.lr_schedule in ("cosine", "linear"):
            warmup = min(warmup, max(0, total - head - 1))
        return r.replace(steps=total, head_steps=head, warmup_steps=warmup, epochs=0.0,
                         head_epochs=0.0, warmup_epochs=0.0)

    def with_steps(self, steps) -> "Recipe":
        """This recipe `steps` steps long (what `--steps=N` means): a length in epochs becomes
        steps, its head phase and warm-up keeping their share of the run (rounded, at least 1)."""
        if not self.epochs:
            return self.replace(steps=steps)
        steps = _coerce_field(FIELDS, "steps", steps)

        def share(epochs, default):
            return max(1, round(steps * epochs / self.epochs)) if epochs else default

        return self.replace(steps=steps, head_steps=share(self.head_epochs, self.head_steps),
                            warmup_steps=share(self.warmup_epochs, self.warmup_steps),
                            epochs=0.0, head_epochs=0.0, warmup_epochs=0.0)

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

    def warnings(self) -> list:
        """What in this recipe is legal but probably not meant (the CLI prints it)."""
        return recipe_warnings(self)

    # ------------------------------------------------------------------ serialization

    def replace(self, **overrides) -> "Recipe":
        """A copy with `overrides` (values may be strings, as from flags)."""
        return dataclasses.replace(self, **coerce_all(FIELDS, overrides))

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        unknown = sorted(set(values) - FIELDS.keys())
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}: known fields are "
                             f"{sorted(FIELDS)}.")
        return cls(**coerce_all(FIELDS, values))

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(json.loads(text))

    def diff(self, other: "Recipe") -> dict:
        """{field: (self's value, other's value)} for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


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
    PAPER_CIFAR, name="smoke", dataset="fashion_mnist", steps=400, lr_boundaries=(200, 300),
    checkpoint_every=100, eval_every=200, log_every=20,
)
"""The paper's CIFAR schedule written out for 400 iterations (lr 0.1, /10 at 200 and 300) of
ResNet-20 on Fashion-MNIST: a few minutes on two CPU cores."""

_TIME_TO_ACCURACY = dict(
    dataset="fashion_mnist", image_size=28, batch_size=256, nesterov=True,
    lr_schedule="linear", lr_boundaries=(), warmup="linear", warmup_lr=0.0,
    label_smoothing=0.1, weight_decay=5e-4, log_every=50,
)

QUICKSTART = Recipe(
    name="quickstart", model="resnet8", augment="none", steps=1400, lr=0.4, warmup_steps=93,
    eval_every=700, checkpoint_every=100, **_TIME_TO_ACCURACY,
)
"""The README's main job: >= 92% on Fashion-MNIST's 10,000 test images in under 5 minutes of
training on 2 CPU cores (results/time-to-accuracy). ResNet-8 at the images' own 28x28 (no
padding), 6 epochs at batch 256: Nesterov SGD, a linear warm-up to lr 0.4 over the first
fifteenth, then straight down to 0 (one-cycle-like), label smoothing 0.1 (Szegedy et al. 2016),
weight decay 5e-4 on kernels. No augmentation: in 6 epochs crops and flips cost more than they
give (measured: 90.7% with pad-crop-flip, 91.8% with flips, 92.3% with none)."""

FAST = Recipe(
    name="fast", model="resnet20", augment="cifar", steps=7800, lr=0.4, warmup_steps=520,
    eval_every=780, checkpoint_every=500, **_TIME_TO_ACCURACY,
)
""">= 94% on Fashion-MNIST in under an hour of training on 2 CPU cores (results/time-to-accuracy):
ResNet-20 at 28x28, 33 epochs at batch 256 with the paper's pad-4 crop and flip, and the
quickstart's optimizer (Nesterov, linear warm-up and decay, label smoothing 0.1, weight decay
5e-4); anchors: airbench and Myrtle's ResNet-9 (label smoothing, one-cycle, batch 512)."""

FINETUNE = Recipe(
    name="finetune", model="resnet18", dataset="folder:photos", weights="imagenet",
    augment="random_resized_crop", batch_size=32, epochs=8.0, head_epochs=2.0, head_lr=0.1,
    lr=0.05, lr_base_batch=256, lr_schedule="cosine", lr_boundaries=(), warmup_epochs=1.0,
    warmup="linear", warmup_lr=0.0, nesterov=True, label_smoothing=0.1, weight_decay=1e-4,
    freeze_bn=True, min_steps=100, eval_every=0, checkpoint_every=200, log_every=20,
    mixed_precision="auto",
)
"""A user's photos from pretrained weights (`--weights=imagenet|FILE`, `--dataset=folder:ROOT`).
- Input: the weight set's size (224 unless image_size) and normalization inside the model;
  training view a random-resized crop (8-100% of the area) and flip, evaluation a resize and
  centre crop by the weight set's crop fraction (torchvision, timm).
- Phases (Keras' transfer-learning guide; Model Maker trains the head alone by default): 2
  epochs of the new classifier alone (backbone frozen, BatchNorm in inference mode) at lr 0.1
  per 256 images, then the whole net at 0.05 per 256 (Nesterov SGD, momentum 0.9; Kornblith et
  al. 2019 searched 0.001-0.1 per 256 for whole-net fine-tuning). A head on ResNet-18's 512
  features (squared norm ~230) diverged at 0.5 and trained best at 0.1-0.2
  (results/photos-to-phone/head_lr.md); ResNet-8's 64 did well at 0.5.
  BatchNorm frozen (`freeze_bn`: small batches' statistics would wreck the pretrained ones;
  torchvision's FrozenBatchNorm2d); 1 epoch of linear warm-up, then cosine to 0.
- Label smoothing 0.1, weight decay 1e-4 on kernels (Model Maker's defaults: 0.1 and L2 1e-4).
- Length 8 epochs of the user's data (Model Maker: 10), at least 100 steps: 500 photos at batch
  32 are 125 steps (32 head-only), 50,000 are 12,500 (3,125); 20 photos would be 8 steps (36%
  on 4 Fashion-MNIST classes, 74.6% at 100: results/finetune-photos). Batch 32 fits a CPU.
- Mixed precision where the hardware has it (`strategies.precision_policy`; 2x faster at 224
  px on an AMX Xeon: results/photos-to-phone); `--set=mixed_precision=off` for float32."""

RECIPES = {r.name: r for r in (PAPER_CIFAR, PAPER_CIFAR110, PAPER_IMAGENET, MODERN, SMOKE,
                               QUICKSTART, FAST, FINETUNE)}


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
