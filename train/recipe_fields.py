"""The mechanics of a recipe's fields: their choices, their validation (errors and warnings) and
their coercion from `--set=field=value` strings. `train.recipes` (the recipes themselves)
imports them; callers use `train.recipes`, which re-exports the choice tuples and `parse_sets`.

    validate(recipe)                                 # ValueError naming the field and the value
    coerce(recipes.FIELDS, "lr_boundaries", "1,2")   # (1, 2), typed as the field's default
    parse_sets(["lr=0.2", "steps=300"])              # {'lr': '0.2', 'steps': '300'}
    recipe_warnings(recipe)                          # what is legal but probably not meant

Data only: no TensorFlow or Keras (`train.augment` imports TensorFlow lazily).
"""

import typing

from train.augment import AUGMENTATIONS

LR_SCHEDULES = ("piecewise", "cosine", "linear", "plateau", "constant")
WARMUPS = ("constant", "linear")
OPTIMIZERS = ("sgd",)
PRECISIONS = ("off", "auto", "float32", "mixed_float16", "mixed_bfloat16")
XLA = ("off", "on", "auto")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
SHORTCUTS = ("default", "A", "B", "C")
# 'auto' and keras_resnet.weights.transfer.NORMALIZATION_MODES (a literal: no Keras imported here)
WEIGHTS_NORMALIZATIONS = ("auto", "caffe", "imagenet", "tf", "torch")
BAD_IMAGES = ("skip", "fail")

# The fields that take one of a fixed set of strings.
CHOICES = {
    "lr_schedule": LR_SCHEDULES, "warmup": WARMUPS, "optimizer": OPTIMIZERS,
    "augment": AUGMENTATIONS, "mixed_precision": PRECISIONS, "xla": XLA, "shortcut": SHORTCUTS,
    "weights_normalization": WEIGHTS_NORMALIZATIONS, "bad_images": BAD_IMAGES,
}


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def validate(r) -> None:
    """Raises ValueError for the first field of `r` (a `train.recipes.Recipe`) out of range,
    naming it, its value and the values it may take."""
    for field, choices in CHOICES.items():
        value = getattr(r, field)
        _check(value in choices, f"recipe field {field}={value!r} is not one of {choices}.")
    for field in ("batch_size", "steps", "checkpoint_every", "keep_checkpoints", "log_every",
                  "steps_per_execution", "plateau_patience"):
        value = getattr(r, field)
        _check(isinstance(value, int) and value >= 1,
               f"recipe field {field} must be a positive int, got {value!r}.")
    for field in ("warmup_steps", "eval_every", "lr_base_batch", "shuffle_buffer", "head_steps",
                  "min_steps"):
        value = getattr(r, field)
        _check(isinstance(value, int) and value >= 0,
               f"recipe field {field} must be an int >= 0, got {value!r}.")
    for field in ("name", "model", "dataset", "train_split", "eval_split", "test_split",
                  "weights"):
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
    _check(0 <= r.erasing <= 1, f"recipe field erasing must be in [0, 1], got {r.erasing!r}.")
    _check(r.image_size is None or (isinstance(r.image_size, int) and r.image_size >= 8),
           f"recipe field image_size must be None or an int >= 8, got {r.image_size!r}.")
    _validate_transfer(r)
    whole = r.total_steps - r.head_iterations  # the whole-net phase, which the schedule spans
    head = f" after {r.head_iterations} head-only steps" if r.head_steps else ""
    _check(r.epochs or r.lr_schedule not in ("cosine", "linear") or whole > r.warmup_iterations,
           f"the run ({whole} steps{head}) must be longer than its warm-up "
           f"({r.warmup_iterations} steps).")
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


def _validate_transfer(r) -> None:
    """The fields of weights, phases, epochs and folders."""
    for field in ("epochs", "head_epochs", "warmup_epochs", "head_lr"):
        value = getattr(r, field)
        _check(value >= 0, f"recipe field {field} must be >= 0, got {value!r}.")
    for epochs, steps in (("head_epochs", "head_steps"), ("warmup_epochs", "warmup_steps")):
        _check(not (getattr(r, epochs) and getattr(r, steps)),
               f"recipe fields {epochs}={getattr(r, epochs)!r} and {steps}="
               f"{getattr(r, steps)!r} both set the same length: set one of them to 0.")
    _check(not r.epochs or r.head_epochs < r.epochs,
           f"head_epochs ({r.head_epochs}) must be shorter than the run's epochs ({r.epochs}).")
    _check(not (r.head_epochs or r.warmup_epochs) or r.epochs,
           "head_epochs and warmup_epochs need a length in epochs: set epochs > 0 (or give "
           "head_steps and warmup_steps).")
    _check(r.epochs or not r.head_steps or r.head_iterations < r.total_steps,
           f"the head-only phase ({r.head_iterations} steps) must end before the run does "
           f"({r.total_steps} steps).")
    _check(not (r.epochs and r.lr_schedule == "piecewise" and r.lr_boundaries),
           f"lr_boundaries {r.lr_boundaries} count steps and the run's length is in epochs "
           f"({r.epochs}): use lr_schedule='cosine' or 'linear', or a length in steps (epochs=0).")
    phased = r.head_steps or r.head_epochs
    _check(not phased or r.lr_schedule in ("cosine", "linear", "constant"),
           f"a head-only phase needs lr_schedule 'cosine', 'linear' or 'constant' for the whole-"
           f"net phase, got {r.lr_schedule!r}.")
    _check(r.crop_fraction is None or 0 < r.crop_fraction <= 1,
           f"recipe field crop_fraction must be None or in (0, 1], got {r.crop_fraction!r}.")
    _check(0 < r.holdout < 1, f"recipe field holdout must be in (0, 1), got {r.holdout!r}: the "
           "fraction of each class held out when a folder tree has no test split, e.g. 0.2.")


def scratch_drops(r) -> list:
    """What `Recipe.resolved` drops from `r` when it has no weights (weights='none', a run from
    scratch): its head-only phase and freeze_bn, as words for `recipe_warnings`; [] otherwise."""
    if r.weights != "none":
        return []
    head = [f"the head-only phase ({k}={getattr(r, k)})" for k in ("head_steps", "head_epochs")
            if getattr(r, k)]
    return head + ["freeze_bn"] * r.freeze_bn


def recipe_warnings(r) -> list:
    """What in `r` is legal but probably not meant, or changed in its plan (the CLI prints it)."""
    out = []
    late = [b for b in r.boundaries if b >= r.total_steps]
    if r.lr_schedule == "piecewise" and late:
        out.append(f"the run stops at step {r.total_steps}: the learning-rate drop(s) at "
                   f"{late} never happen. Set --set=lr_boundaries=... (or a linear or cosine "
                   "lr_schedule) to decay within the run.")
    dropped = scratch_drops(r)
    if dropped:
        out.append(f"weights='none' is a run from scratch: its plan drops {' and '.join(dropped)}, "
                   "so every layer trains from step 0 on the recipe's lr schedule with BatchNorm "
                   "statistics updating (a head-only phase on random features through frozen "
                   "random BatchNorm reached chance accuracy: tests/train/"
                   "test_finetune_transfer.py). recipe.json keeps the recipe as given.")
    return out


# ------------------------------------------------------------------ coercion from strings

def coerce(fields: dict, name: str, value):
    """`value`, a flag string (or a JSON value), as the type of recipe field `name`; `fields` is
    {name: dataclasses.Field} of `train.recipes.Recipe` (its type and default decide)."""
    if name not in fields:
        raise ValueError(f"unknown recipe field {name!r}: known fields are {sorted(fields)}.")
    field = fields[name]
    default = field.default
    optional = typing.get_origin(field.type) is typing.Union
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "auto", ""):
            return None
        try:
            if isinstance(default, bool) or field.type == typing.Optional[bool]:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(default, tuple):
                return tuple(int(float(v)) for v in text.strip("()[]").split(",") if v.strip())
            if isinstance(default, int) or field.type == typing.Optional[int]:
                number = float(text)
                if number != int(number):
                    raise ValueError
                return int(number)
            if isinstance(default, float) or field.type == typing.Optional[float]:
                return float(text)
        except ValueError:
            kind = type(default).__name__ if default is not None else str(field.type)
            raise ValueError(
                f"recipe field {name}={value!r} is not a valid {kind} (default {default!r})."
            ) from None
        if name == "xla" and text.lower() in ("true", "false", "1", "0"):
            return "on" if text.lower() in ("true", "1") else "off"
        return text
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    floating = isinstance(default, float) or field.type == typing.Optional[float]
    if floating and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name == "xla" and isinstance(value, bool):
        return "on" if value else "off"
    return value


def coerce_all(fields: dict, values: dict) -> dict:
    """{name: coerce(fields, name, value)} of `values`."""
    return {k: coerce(fields, k, v) for k, v in values.items()}


def parse_sets(items) -> dict:
    """{'field': 'value'} from command-line `--set=field=value` items (strings; `replace`
    converts them); ValueError for a malformed one."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--set={item!r} is not field=value.")
        overrides[field.strip()] = value
    return overrides
