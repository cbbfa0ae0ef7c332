"""Trains a ResNet: `python -m train --recipe=smoke --run_dir=runs/smoke`.

Flags become overrides of the recipe, then one call into `train.loop.train`, then the
summary is printed. Re-running the same command on the same --run_dir resumes it.

    python -m train --recipe=paper_cifar --model=resnet20 --dataset=fashion_mnist \\
        --scale=0.05 --run_dir=runs/r20_fm
    python -m train --recipe=modern --set=label_smoothing=0.2 --set=lr=0.2 --run_dir=runs/m
    python -m train --run_dir=runs/r20_fm          # resume with the saved recipe.json

Recipes: smoke, paper_cifar, paper_cifar110, paper_imagenet, modern (train/recipes.py).
Any recipe field can be set with --set=field=value; the common ones have their own flags.
"""

import json
import os
import sys

from absl import app, flags

from train import recipes

FLAGS = flags.FLAGS
flags.DEFINE_string("recipe", None, f"Recipe name, one of {sorted(recipes.RECIPES)}. Default: "
                    "the run directory's recipe.json when it exists, else paper_cifar.")
flags.DEFINE_string("run_dir", None, "Run directory: checkpoints, logs, model.keras. Re-running "
                    "on the same directory resumes.", required=True)
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy (auto: TPU, then TF_CONFIG workers, then several GPUs, "
                  "then one device).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default $KERAS_RESNET_DATA or "
                    "~/tensorflow_datasets).")
flags.DEFINE_multi_string("set", [], "Override any recipe field: --set=field=value (repeatable).")
flags.DEFINE_integer("verbose", 1, "1: progress bar, 0: quiet.")
# Shorthands for common recipe fields (strings, converted by the recipe's field types).
SHORTHANDS = {
    "model": "Network, e.g. resnet20, resnet56, resnet50, plain20, resnet8.",
    "dataset": "Dataset: fashion_mnist, cifar10, cifar100, imagenette, imagenet2012, folder:DIR.",
    "steps": "Training iterations before `scale` (the paper's CIFAR recipe: 64000).",
    "scale": "Multiplies every iteration count of the schedule (steps, lr boundaries, warm-up).",
    "batch_size": "Global batch size, split across replicas.",
    "lr": "Peak learning rate.",
    "mixed_precision": "off | auto | mixed_float16 | mixed_bfloat16.",
    "xla": "off | on | auto.",
    "synchronized_bn": "true | false | auto (auto: synchronized with more than one replica).",
    "seed": "Seed of initialization, shuffling and augmentation.",
    "train_split": "Training split, e.g. train or train[:45000].",
    "eval_split": "Split evaluated during training, e.g. test or train[45000:].",
}
for _name, _help in SHORTHANDS.items():
    flags.DEFINE_string(_name, None, _help)


def overrides_from_flags() -> dict:
    """Recipe overrides from the shorthand flags and --set (strings; the recipe converts)."""
    overrides = {k: getattr(FLAGS, k) for k in SHORTHANDS if getattr(FLAGS, k) is not None}
    for item in FLAGS.set:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--set={item!r} is not field=value.")
        overrides[field.strip()] = value
    return overrides


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from train import loop  # after flag parsing: importing TensorFlow is slow

    try:
        overrides = overrides_from_flags()
        saved = os.path.join(FLAGS.run_dir, "recipe.json")
        if FLAGS.recipe is None and os.path.exists(saved):
            with open(saved) as f:
                recipe = recipes.Recipe.from_json(f.read())
        else:
            recipe = recipes.resolve(FLAGS.recipe or "paper_cifar")
        recipe = recipe.replace(**overrides)
        summary = loop.train(recipe, FLAGS.run_dir, FLAGS.strategy, data_dir=FLAGS.data_dir,
                             verbose=FLAGS.verbose)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(f"{summary['model']} on {summary['dataset']} ({summary['recipe']}, {summary['steps']} "
          f"steps, {summary['strategy']}, {summary['precision']})")
    print(f"  test accuracy {100 * summary['test_accuracy']:.2f}%  "
          f"(error {100 * summary['test_error']:.2f}%, loss {summary['test_loss']:.4f})")
    print(f"  {summary['images_per_sec']} images/s, {summary['train_seconds']:.0f} s of training")
    print(f"  model: {summary['model_path']}")
    print(json.dumps(summary, indent=2))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
