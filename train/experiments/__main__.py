"""Runs one of the paper's experiments: `python -m train.experiments NAME [flags]`.

    python -m train.experiments degradation --smoke            # a few minutes on 2 CPU cores
    python -m train.experiments degradation --steps=2000 --run_dir=runs/degradation
    python -m train.experiments depth --dataset=cifar10         # full size: meant for a GPU
    python -m train.experiments shortcuts --models=resnet32 --seeds=3

NAME: degradation (Fig. 6), shortcuts (Table 3), depth (Table 6, Fig. 7). Results go to
--run_dir (results.md, results.json, PNG plots; the training runs under runs/). Re-running the
same command resumes unfinished runs and reuses finished ones.
"""

import sys

from absl import app, flags

from train import console, recipes

FLAGS = flags.FLAGS
flags.DEFINE_bool("smoke", False, "Tiny size (40 iterations, one seed, small evaluations): "
                  "checks the whole experiment in a few minutes on a CPU.")
flags.DEFINE_string("dataset", "fashion_mnist", "train.data dataset: fashion_mnist (offline), "
                    "cifar10 (where it can be had), or any other train.data name.")
flags.DEFINE_integer("seeds", None, "Seeds per net (default: the paper's, e.g. 5 for "
                     "ResNet-110 in depth; 1 with --smoke).")
flags.DEFINE_string("run_dir", None, "Experiment directory (default "
                    "runs/<name>_<dataset>_<size>).")
flags.DEFINE_integer("steps", None, "Training iterations per run; the paper's schedule "
                     "(64k, lr /10 at 32k and 48k) is scaled to them.")
flags.DEFINE_list("models", None, "Nets to train instead of the experiment's, e.g. "
                  "resnet8,resnet14 (shortcuts: the nets to compare A, B, C on).")
flags.DEFINE_multi_string("set", [], "Recipe field override, --set=field=value (repeatable), "
                          "e.g. --set=eval_split=test[:2000] --set=batch_size=64.")
flags.DEFINE_integer("eval_images", None, "Test images for the layer responses of depth "
                     "(default 10000; 500 with --smoke).")
flags.DEFINE_string("strategy", None, "tf.distribute strategy name for train.loop "
                    "(default: auto).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default $KERAS_RESNET_DATA or "
                    "~/tensorflow_datasets).")
flags.DEFINE_integer("verbose", 1, "1: a progress bar per run; 0: quiet.")


def config_from_flags():
    """A train.experiments.Config from the flags."""
    from train.experiments import Config

    overrides = recipes.parse_sets(FLAGS.set)
    return Config(dataset=FLAGS.dataset, smoke=FLAGS.smoke, steps=FLAGS.steps, seeds=FLAGS.seeds,
                  models=tuple(FLAGS.models) if FLAGS.models else None, overrides=overrides,
                  eval_images=FLAGS.eval_images)


def main(argv):
    console.start_command_line(FLAGS.verbosity if FLAGS["verbosity"].present else None)
    import train.experiments as experiments

    if len(argv) != 2:
        raise app.UsageError(f"give one experiment name, one of {sorted(experiments.EXPERIMENTS)};"
                             f" got {argv[1:]}.")
    try:
        experiments.get(argv[1])
        results = experiments.run(argv[1], FLAGS.run_dir, config_from_flags(),
                                  strategy=FLAGS.strategy, data_dir=FLAGS.data_dir,
                                  verbose=FLAGS.verbose)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(results["results_md"]) as f:
        print()
        print(f.read())
    print(f"results: {results['results_md']}, {results['results_json']}")
    print("plots: " + ", ".join(results.get("plots", [])))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
