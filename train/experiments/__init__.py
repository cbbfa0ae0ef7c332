"""The paper's experiments as commands: lists of training runs plus a report that reads their
run directories.

    python -m train.experiments degradation --smoke
    results = train.experiments.run("depth", "runs/depth", Config(steps=2000))

Each writes results.md, results.json and PNG plots into its run directory; its training runs
live in `runs/<net>-seed<k>/` below it and are resumed or reused when the same command runs
again. Experiments: degradation (Fig. 6), shortcuts (Table 3), depth (Table 6, Fig. 7).
"""

import os
import time

from absl import logging

from train.experiments import degradation, depth, report, runner, shortcuts
from train.experiments.runner import Config, Net

EXPERIMENTS = {m.NAME: m for m in (degradation, shortcuts, depth)}


def get(name: str):
    """The experiment module `name`."""
    key = str(name).strip().lower()
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: use one of {sorted(EXPERIMENTS)}.")
    return EXPERIMENTS[key]


def default_run_dir(name: str, config: Config) -> str:
    """runs/<experiment>_<dataset>_<size>, e.g. runs/degradation_fashion_mnist_smoke."""
    size = f"{config.steps}steps" if config.steps else ("smoke" if config.smoke else "full")
    dataset = config.dataset.replace(":", "_").replace("/", "_").strip("_")
    return os.path.join("runs", f"{get(name).NAME}_{dataset}_{size}")


def plan(name: str, run_dir: str, config: Config | None = None) -> list:
    """The RunSpecs experiment `name` trains in `run_dir` (nothing is run)."""
    config = config or Config()
    return runner.plan(get(name).nets(config), config, os.path.abspath(run_dir))


def run(name: str, run_dir: str | None = None, config: Config | None = None, *,
        strategy=None, data_dir: str | None = None, verbose: int = 1) -> dict:
    """Trains (or resumes) every run of experiment `name`, writes its report into `run_dir`
    and returns the results (what results.json holds).

    config: the size (`Config(smoke=True)`, `Config(steps=2000, seeds=3)`); default full size.
    strategy, data_dir, verbose: passed to `train.loop.train`.
    """
    experiment = get(name)
    config = config or Config()
    root = os.path.abspath(run_dir or default_run_dir(name, config))
    os.makedirs(root, exist_ok=True)
    specs = runner.plan(experiment.nets(config), config, root)
    logging.info("Experiment %s (%s, %s): %d runs in %s", experiment.NAME, config.dataset,
                 config.size, len(specs), root)
    start = time.perf_counter()
    records = runner.execute(specs, strategy=strategy, data_dir=data_dir, verbose=verbose)
    markdown, results = experiment.report_runs(records, config, root, data_dir=data_dir)
    results = {
        "experiment": experiment.NAME,
        "title": experiment.TITLE,
        "dataset": config.dataset,
        "size": config.size,
        "steps": records[0].steps,
        "seeds": {label: len(rs) for label, rs in report.by_net(records).items()},
        "overrides": dict(config.overrides),
        "run_dir": root,
        **results,
        "runs": [r.to_json() for r in records],
        "seconds": round(time.perf_counter() - start, 1),
    }
    logging.info("Experiment %s done: %s", experiment.NAME, os.path.join(root, "results.md"))
    return report.write_results(root, markdown, results)


__all__ = ["Config", "EXPERIMENTS", "Net", "default_run_dir", "get", "plan", "run"]
