"""Trains a ResNet: `python -m train --recipe=smoke --run_dir=runs/smoke`.

Flags become overrides of the recipe, then one call into `train.loop.train`, then the summary
is printed. Re-running the same command on the same --run_dir resumes it.

    python -m train --recipe=paper_cifar --model=resnet20 --dataset=fashion_mnist \\
        --scale=0.05 --run_dir=runs/r20_fm
    python -m train --recipe=smoke --dataset=folder:/data/flowers --run_dir=runs/flowers
    python -m train --run_dir=runs/r20_fm          # resume with the saved recipe.json

Any recipe field can be set with --set=field=value; the common ones have their own flags. The
terminal shows a progress bar and the result; --verbosity=0 brings back INFO logs (absl, TFDS,
TensorFlow's own).
"""

import os
import sys

from absl import app, flags

from train import console, recipes

FLAGS = flags.FLAGS
flags.DEFINE_string("recipe", None, f"Recipe name, one of {sorted(recipes.RECIPES)}. Default: "
                    "the run directory's recipe.json when it exists, else paper_cifar.")
flags.DEFINE_string("run_dir", None, "Run directory: checkpoints, logs, model.keras. Re-running "
                    "on the same directory resumes.", required=True)
flags.DEFINE_enum("strategy", "auto", list(recipes.STRATEGIES),
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
    "weights": "Start from pretrained weights: a registry tag of the model (imagenet, ...), a file "
               "(.weights.h5, keras.applications .h5, .safetensors, .pth, a run's model.keras) "
               "or none (from scratch). The head is replaced when the classes differ.",
    "steps": "Training iterations (multiplied by --scale only when you give --scale). On a recipe "
             "whose length is in epochs (finetune), N steps with its head phase and warm-up "
             "keeping their share.",
    "epochs": "Length in epochs of the training split (finetune: 8); 0 lets --steps decide.",
    "scale": "Multiplies every iteration count of the schedule (steps, lr boundaries, warm-up).",
    "batch_size": "Global batch size, split across replicas.",
    "lr": "Learning rate: the peak, or per lr_base_batch images when the recipe scales it "
          "with the batch (modern).",
    "image_size": "Input size the model trains at (images are resized to it); needed for "
                  "folders whose images have several sizes.",
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
    """Recipe overrides from the shorthand flags and --set (strings; the recipe converts).
    --steps is applied by `apply_flags` (it means steps on an epoch-based recipe too)."""
    overrides = {k: getattr(FLAGS, k) for k in SHORTHANDS
                 if k != "steps" and getattr(FLAGS, k) is not None}
    overrides.update(recipes.parse_sets(FLAGS.set))
    return overrides


def apply_flags(recipe):
    """`recipe` with the flags' overrides, then --steps through `Recipe.with_steps`."""
    recipe = recipe.replace(**overrides_from_flags())
    return recipe if FLAGS.steps is None else recipe.with_steps(FLAGS.steps)


def set_up_process() -> None:
    """`train.console.start_command_line` before TensorFlow's import: oneDNN, and unless
    --verbosity was given, INFO logs off (absl's, TFDS's, TensorFlow's own) with native lines
    in RUN_DIR/native.log."""
    from train import rundir

    verbosity = FLAGS.verbosity if FLAGS["verbosity"].present else None
    console.start_command_line(verbosity, rundir.RunDir(FLAGS.run_dir).native_log())
    if verbosity is None:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()


def print_summary(summary: dict, recipe) -> None:
    steps = f"{summary['steps']} steps"
    if recipe.scale != 1.0:
        steps += f" (= {recipe.steps} x scale {recipe.scale:g})"
    print(f"\n{summary['model']} on {summary['dataset']} ({summary['recipe']}, {steps} of "
          f"{summary['global_batch_size']}, {summary['strategy']}, {summary['precision']})")
    print(f"  test accuracy {100 * summary['test_accuracy']:.2f}% on {summary['test_images']} "
          f"images ({summary['test_split']}), loss {summary['test_loss']:.4f}")
    phases = summary.get("phase_seconds", {})
    split = f" (head-only {phases['head']:.0f} s, whole net {phases.get('whole', 0):.0f} s)" \
        if "head" in phases else ""
    print(f"  {summary['images_per_sec']} images/s, {summary['train_seconds']:.0f} s of training"
          f"{split} on {summary['cpu']}")
    files = [f for f in ("model.keras", "summary.json", "curves.png", "confusion.png",
                         "mistakes.png") if os.path.exists(os.path.join(summary["run_dir"], f))]
    print(f"  run: {summary['run_dir']} ({', '.join(files)})")


def print_data(recipe) -> None:
    """A folder's classes x splits table before training (`train.data.describe`; nothing for
    TFDS datasets). Broken images with bad_images='fail' raise ValueError here, before
    anything is built: `main` makes it exit status 2."""
    from train import data, session

    table = data.describe(recipe.dataset, data_dir=FLAGS.data_dir,
                          **session.folder_options(recipe))  # bad_images, holdout
    if table:
        print(table)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    set_up_process()
    from train import loop, strategies  # after the process set-up: they import TensorFlow

    try:
        saved = os.path.join(FLAGS.run_dir, "recipe.json")
        if FLAGS.recipe is None and os.path.exists(saved):
            with open(saved) as f:
                recipe = recipes.Recipe.from_json(f.read())
        else:
            recipe = recipes.resolve(FLAGS.recipe or "paper_cifar")
        recipe = apply_flags(recipe)
        for warning in recipe.warnings():
            print(f"warning: {warning}", file=sys.stderr)
        strategies.make_deterministic(recipe.deterministic)  # before the folder scan's ops
        print_data(recipe)
        summary = loop.train(recipe, FLAGS.run_dir, FLAGS.strategy, data_dir=FLAGS.data_dir,
                             verbose=FLAGS.verbose)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(summary, recipe)
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
