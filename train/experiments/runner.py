"""Runs of an experiment: which recipes to train, training them with `train.loop.train`, and
reading their run directories back.

An experiment's root directory holds one loop run directory per (net, seed) under `runs/`
(`runs/resnet20-seed0/`, `runs/resnet20-B-seed0/`, ...). The loop resumes a run directory and
returns a finished one's summary at once, so re-running an experiment reuses its runs.
"""

import dataclasses
import os
import re

from absl import logging

from train import recipes as recipes_lib
from train import rundir

SHORTCUT_OPTIONS = recipes_lib.SHORTCUTS[1:]  # the recipe field's, less "default"
SMOKE_STEPS = 40
"""Iterations of a `--smoke` run: the paper's schedule shrunk to 40 steps (lr /10 at 20, 30)."""
SMOKE_EVAL_SPLIT = "test[:1000]"
TAIL_FRACTION = 0.1
"""The final training error averages the logged training error over this last part of a run."""


@dataclasses.dataclass(frozen=True)
class Net:
    """One network of an experiment: a `train.loop` model name, the recipe it trains with, an
    optional shortcut option (None: the model's own, A for CIFAR ResNets) and its number of
    seeds at full size."""

    model: str
    recipe: str = "paper_cifar"
    shortcut: str | None = None
    seeds: int = 1

    @property
    def label(self) -> str:
        return f"{self.model}-{self.shortcut}" if self.shortcut else self.model

    @property
    def plain(self) -> bool:
        return self.model.startswith("plain")

    @property
    def depth(self) -> int | None:
        match = re.search(r"(\d+)$", self.model)
        return int(match.group(1)) if match else None


def net_for(model: str, **kwargs) -> Net:
    """A Net for `model` with the paper's recipe for its depth: ResNet-110 and deeper get the
    sec. 4.2 warm-up (`paper_cifar110`)."""
    import keras_resnet

    arch = keras_resnet.resolve(model.strip())  # unknown names and depths raise here
    if arch.stem != "cifar":
        raise ValueError(f"model {model!r} is not a CIFAR-style net name: use 'resnetN' or "
                         "'plainN' with N = 6n+2 (e.g. resnet20, plain56, resnet110).")
    net = Net(arch.name, **kwargs)
    deep = not net.plain and net.depth >= 110
    return dataclasses.replace(net, recipe="paper_cifar110" if deep else "paper_cifar")


@dataclasses.dataclass(frozen=True)
class Config:
    """How big an experiment runs.

    dataset: a `train.data` name ('fashion_mnist', 'cifar10', ...).
    smoke: a few minutes on 2 CPU cores: SMOKE_STEPS iterations, one seed, evaluation during
        training and the final test error on SMOKE_EVAL_SPLIT.
    steps: training iterations; the paper's schedule is scaled to them (lr /10 at 50% and
        75%). None: the recipe's (64k), or SMOKE_STEPS with `smoke`.
    seeds: seeds per net; None: each net's own count (1 with `smoke`).
    models: replaces the experiment's nets (each experiment says how).
    overrides: recipe fields set last, e.g. {'batch_size': 32, 'eval_split': 'test[:2000]'}.
    eval_images: test images for layer responses (None: 10,000, 500 with `smoke`).
    """

    dataset: str = "fashion_mnist"
    smoke: bool = False
    steps: int | None = None
    seeds: int | None = None
    models: tuple | None = None
    overrides: tuple = ()
    eval_images: int | None = None

    def __post_init__(self):
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 4):
            raise ValueError(f"steps must be an int >= 4 (the schedule needs room for two lr "
                             f"drops), got {self.steps!r}.")
        if self.seeds is not None and (not isinstance(self.seeds, int) or self.seeds < 1):
            raise ValueError(f"seeds must be a positive int, got {self.seeds!r}.")
        if self.eval_images is not None and (not isinstance(self.eval_images, int)
                                             or self.eval_images < 1):
            raise ValueError(f"eval_images must be a positive int, got {self.eval_images!r}.")
        if isinstance(self.overrides, dict):
            object.__setattr__(self, "overrides", tuple(sorted(self.overrides.items())))
        if isinstance(self.models, (list, str)):
            models = self.models.split(",") if isinstance(self.models, str) else self.models
            object.__setattr__(self, "models", tuple(m.strip() for m in models if m.strip()))
        if self.models is not None:
            if not self.models:
                raise ValueError("models is empty: name at least one net, e.g. resnet20.")
            object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        for field, _ in self.overrides:
            if field not in recipes_lib.FIELDS:
                raise ValueError(f"unknown recipe field {field!r} in overrides: known fields are "
                                 f"{sorted(recipes_lib.FIELDS)}.")
            if field in ("model", "seed", "dataset"):
                raise ValueError(f"recipe field {field!r} is set by the experiment: use "
                                 "--models, --seeds or --dataset instead of an override.")

    @property
    def size(self) -> str:
        if self.steps is not None:
            return f"{self.steps} steps"
        return "smoke" if self.smoke else "full"

    @property
    def num_eval_images(self) -> int:
        return self.eval_images or (500 if self.smoke else 10_000)

    def seeds_for(self, net: Net) -> int:
        if self.seeds is not None:
            return self.seeds
        return 1 if self.smoke else net.seeds


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment: a net, a seed, its resolved recipe and directory."""

    net: Net
    seed: int
    recipe: recipes_lib.Recipe
    run_dir: str

    @property
    def name(self) -> str:
        return f"{self.net.label}-seed{self.seed}"


def _model_name(net: Net) -> dict:
    """Recipe overrides naming the net and its shortcut option (None: the model's own)."""
    if net.shortcut is None:
        return {"model": net.model}
    if net.shortcut not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut {net.shortcut!r} is not one of {SHORTCUT_OPTIONS}.")
    return {"model": net.model, "shortcut": net.shortcut}


def recipe_for(net: Net, seed: int, config: Config) -> recipes_lib.Recipe:
    """The paper's recipe for `net`, shortened to `config`'s size, on `config.dataset`."""
    base = recipes_lib.resolve(net.recipe)
    total = config.steps or (SMOKE_STEPS if config.smoke else base.total_steps)
    overrides = dict(_model_name(net), dataset=config.dataset, seed=seed)
    if total != base.total_steps:
        overrides["scale"] = total / base.steps
    if config.smoke:
        overrides.update(eval_split=SMOKE_EVAL_SPLIT, eval_every=max(1, total // 4),
                         log_every=max(1, total // 20), checkpoint_every=total)
        overrides["test_split"] = SMOKE_EVAL_SPLIT
    elif config.steps is not None:
        overrides.update(eval_every=max(1, total // 20), log_every=max(1, min(100, total // 100)),
                         checkpoint_every=max(1, min(1000, total // 4)))
    else:
        overrides.update(eval_every=max(1, total // 32))
    overrides.update(dict(config.overrides))
    return base.replace(**overrides)


def plan(nets, config: Config, root: str) -> list:
    """RunSpecs for every net and seed, in order; run directories under `root`/runs/."""
    specs = []
    for net in nets:
        for seed in range(config.seeds_for(net)):
            spec_dir = os.path.join(root, "runs", f"{net.label}-seed{seed}")
            specs.append(RunSpec(net, seed, recipe_for(net, seed, config), spec_dir))
    return specs


def execute(specs, *, strategy=None, data_dir=None, verbose: int = 1) -> list:
    """Trains (or resumes, or reuses) every run in order; returns their RunRecords."""
    import keras

    from train import loop

    records = []
    for i, spec in enumerate(specs, 1):
        logging.info("Run %d/%d: %s (%s, %d steps) in %s", i, len(specs), spec.name,
                     spec.recipe.name, spec.recipe.total_steps, spec.run_dir)
        loop.train(spec.recipe, spec.run_dir, strategy, data_dir=data_dir, verbose=verbose)
        keras.backend.clear_session()
        records.append(read_run(spec))
    return records


# ------------------------------------------------------------------- reading run dirs


@dataclasses.dataclass
class RunRecord:
    """A finished run as its directory tells it: summary.json and metrics.csv rows."""

    spec: RunSpec
    summary: dict
    rows: list

    @property
    def net(self) -> Net:
        return self.spec.net

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def steps(self) -> int:
        return int(self.summary["steps"])

    @property
    def test_error(self) -> float:
        """Error (%) on the recipe's test split at the end of training."""
        return 100.0 * float(self.summary["test_error"])

    def curve(self, key: str) -> tuple:
        """(steps, error %) from the metrics rows that have accuracy column `key`."""
        return rundir.curve(self.rows, key, rundir.error_pct)

    @property
    def train_error(self) -> float:
        """Training error (%, in training mode on augmented batches, as logged), averaged
        over the logged intervals in the last TAIL_FRACTION of the run."""
        steps, errors = self.curve("train_accuracy")
        if not steps:
            raise ValueError(f"{self.spec.run_dir}/metrics.csv has no training accuracy rows.")
        start = steps[-1] * (1.0 - TAIL_FRACTION)
        tail = [e for s, e in zip(steps, errors) if s > start] or [errors[-1]]
        return sum(tail) / len(tail)

    def to_json(self) -> dict:
        return {
            "net": self.net.label, "model": self.net.model, "shortcut": self.net.shortcut,
            "seed": self.seed, "run_dir": self.spec.run_dir, "steps": self.steps,
            "params": self.summary.get("params"), "train_error_pct": round(self.train_error, 4),
            "test_error_pct": round(self.test_error, 4),
            "test_split": test_split(self.spec.recipe),
            "train_seconds": self.summary.get("train_seconds"),
            "images_per_sec": self.summary.get("images_per_sec"),
        }


def test_split(recipe) -> str:
    """The split the loop's final test error is measured on."""
    return getattr(recipe, "test_split", "test")


def read_run(spec: RunSpec) -> RunRecord:
    """The RunRecord of a finished run directory."""
    run = rundir.RunDir(spec.run_dir)
    if not os.path.exists(run.summary):
        raise ValueError(f"{spec.run_dir} has no summary.json: the run has not finished; "
                         "re-run the experiment to resume it.")
    return RunRecord(spec, run.read_summary(), run.read_metrics())
