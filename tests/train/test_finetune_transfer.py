"""Fine-tuning beats training from scratch (issue 21), on real images offline.

The transfer task is Fashion-MNIST: a source ResNet-8 trained briefly on classes 0-5 (T-shirt,
trouser, pullover, dress, coat, sandal), then fine-tuned on the unseen classes 6-9 (shirt,
sneaker, bag, ankle boot) with few images per class: through `train.loop.train` on a folder of
PNGs (slow), and on the loop's pieces in memory (the default suite's short form).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from train import model as model_lib
from train import recipes, steps, views

SOURCE_CLASSES = (0, 1, 2, 3, 4, 5)
TARGET_CLASSES = (6, 7, 8, 9)


def write_tree(root, fashion_dir, classes, per_class, split_slices):
    """root/<split>/<class>/<i>.png of Fashion-MNIST `classes` (grayscale PNGs, read as RGB):
    `per_class[split]` images of each class, taken in order from `split_slices[split]`."""
    from PIL import Image

    from train import data

    for split, tfds_split in split_slices.items():
        ds, _ = data.load("fashion_mnist", tfds_split, data_dir=fashion_dir)
        counts = dict.fromkeys(classes, 0)
        for image, label in ds.as_numpy_iterator():
            label = int(label)
            if label not in counts or counts[label] >= per_class[split]:
                continue
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(folder / f"{counts[label]}.png")
            counts[label] += 1
            if all(c >= per_class[split] for c in counts.values()):
                break
    return root


def source_recipe(root, **overrides):
    """ResNet-8 trained from scratch on the source folder: the quickstart's optimizer, short."""
    fields = dict(name="source", model="resnet8", dataset=f"folder:{root}", batch_size=64,
                  steps=150, warmup_steps=10, lr=0.2, eval_every=150, checkpoint_every=150,
                  log_every=50, deterministic=False)
    fields.update(overrides)
    return recipes.resolve("quickstart", **fields)


def finetune_recipe(root, weights, **overrides):
    """The finetune recipe shrunk to a tiny folder at the source's 28 px: same phases, same
    optimizer and learning rates, a length in steps. The images are 28x28 already: crop
    fraction 1 makes the evaluation view the identity, and the flip stands in for the
    random-resized crop (8% of a 28-px image is a 8-px patch), so a run without weights
    (whose view is `for_dataset`'s) sees the same pixels."""
    fields = dict(model="resnet8", dataset=f"folder:{root}", weights=weights, image_size=28,
                  crop_fraction=1.0, augment="flip", batch_size=16, epochs=0.0,
                  head_epochs=0.0, warmup_epochs=0.0, steps=60, head_steps=15, warmup_steps=5,
                  eval_every=60, checkpoint_every=60, log_every=15, deterministic=False,
                  mixed_precision="off", head_lr=0.5)  # as the margins were measured: float32
    # on every CPU; head lr 0.5 per 256 suits ResNet-8's 64 features (the recipe's 0.1 is for
    # ResNet-18's 512 and more: results/photos-to-phone/head_lr.md)
    fields.update(overrides)
    return recipes.resolve("finetune", **fields)


@pytest.fixture(scope="module")
def source_model(tmp_path_factory, fashion_dir):
    """model.keras of a ResNet-8 trained on Fashion-MNIST classes 0-5 (300 images a class)."""
    from train import loop

    base = tmp_path_factory.mktemp("source")
    root = write_tree(base / "photos", fashion_dir, SOURCE_CLASSES,
                      {"train": 300, "test": 50}, {"train": "train", "test": "test"})
    summary = loop.train(source_recipe(root), str(base / "run"), verbose=0)
    return summary["model_path"], summary["test_accuracy"]


@pytest.fixture(scope="module")
def target_root(tmp_path_factory, fashion_dir):
    """A folder of classes 6-9: 10 training images a class, 100 test images a class."""
    return write_tree(tmp_path_factory.mktemp("target") / "photos", fashion_dir, TARGET_CLASSES,
                      {"train": 10, "test": 100}, {"train": "train", "test": "test"})


# --------------------------------------------------------------- fine-tuning beats scratch

# Measured (2 cores, Intel Xeon with AVX-512; `finetune_recipe` on `target_root` with 10
# training images a class, from `source_model` at 89.0% on its own 6 classes; test accuracy on
# 400 images of classes 6-9, seeds 0-3, run by `train.loop.train`):
#   pretrained (this recipe):                       74.0, 75.8, 72.5, 75.0 %
#   same recipe, weights='none' (plan from scratch): 71.5, 61.8, 62.3, 64.8 %
# gaps 2.5, 14.0, 10.3, 10.3 points: a single run's gap is noisy, so the test compares means
# over seeds 0-2 (74.1 vs 65.1 %: 9.0 points; 14.3 in an earlier measurement with another file
# order); the margin is about half the smaller mean gap. Before the plan dropped them, the head-
# only phase and frozen BatchNorm of weights='none' gave 23.5-25.0 % (chance: 25%): the scratch
# mean must be well above chance (61.8 % its lowest run) to show a real from-scratch run.
# At a fifth of the finetune recipe's learning rates the pretrained runs reached only 62-66%
# (measured before): the margin also guards the recipe's numbers.
MARGIN_OVER_SCRATCH = 0.05
SCRATCH_ABOVE_CHANCE = 0.40
SEEDS = (0, 1, 2)


def _finetune_runs(target_root, source_path, tmp_path, seed):
    """summary.json of the recipe from `source_path` and of the same recipe with weights='none'
    (whose plan trains from scratch: no head-only phase, BatchNorm not frozen)."""
    from train import loop

    runs = {"pretrained": source_path, "same_recipe_from_scratch": "none"}
    return {name: loop.train(finetune_recipe(target_root, weights, seed=seed),
                             str(tmp_path / f"{name}{seed}"), verbose=0)
            for name, weights in runs.items()}


@pytest.mark.slow
def test_finetuning_beats_training_from_scratch(source_model, target_root, tmp_path):
    """A source ResNet-8 (Fashion-MNIST classes 0-5) fine-tuned on 40 photos of the unseen
    classes 6-9 beats, at equal steps, the same recipe with weights='none' (issue 21's
    baseline, a real run from scratch since its plan drops the head-only phase and frozen
    BatchNorm), by the measured margin (means over three seeds)."""
    source_path, source_accuracy = source_model
    assert source_accuracy > 0.8
    runs = {seed: _finetune_runs(target_root, source_path, tmp_path, seed) for seed in SEEDS}
    acc = {seed: {name: s["test_accuracy"] for name, s in r.items()} for seed, r in runs.items()}
    first = runs[SEEDS[0]]
    weights = first["pretrained"]["weights"]
    assert weights["tag_or_path"] == source_path and weights["layers_left_at_init"] == [
        "predictions"]
    assert first["same_recipe_from_scratch"]["weights"] == {}
    mean = {name: np.mean([a[name] for a in acc.values()])
            for name in ("pretrained", "same_recipe_from_scratch")}
    assert mean["same_recipe_from_scratch"] >= SCRATCH_ABOVE_CHANCE, acc  # it trains
    assert mean["pretrained"] >= mean["same_recipe_from_scratch"] + MARGIN_OVER_SCRATCH, acc


def _arrays(fashion_dir, split, classes, per_class):
    """uint8 (N, 28, 28, 1) images and int32 labels 0.. of `per_class` images of each class."""
    from train import data

    ds, _ = data.load("fashion_mnist", split, data_dir=fashion_dir)
    images, labels, counts = [], [], dict.fromkeys(classes, 0)
    for image, label in ds.as_numpy_iterator():
        if int(label) in counts and counts[int(label)] < per_class:
            counts[int(label)] += 1
            images.append(image)
            labels.append(classes.index(int(label)))
        if all(c >= per_class for c in counts.values()):
            break
    return np.stack(images), np.asarray(labels, np.int32)


def _fit(recipe, view, images, labels, classes, mean=None):
    """`recipe`'s model trained by the loop's compiled steps on in-memory batches drawn
    statelessly (seed, step), as its plan (`Recipe.resolved`) says: the pieces of `train.loop`
    without its run directory."""
    recipe = recipe.resolved(len(labels))
    keras.utils.set_random_seed(recipe.seed)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = model_lib.build_model(recipe, view, mean, classes).model
        optimizer = steps.make_optimizer(recipe, "float32")
        optimizer.build(model.trainable_variables)
    x, y = tf.constant(images, tf.float32), tf.constant(labels)

    def batch(step):
        key = tf.stack([tf.constant(recipe.seed, tf.int64), step])
        index = tf.random.stateless_uniform([recipe.batch_size], key, 0, len(labels), tf.int32)
        return tf.gather(x, index), tf.gather(y, index)

    compiled = steps.Steps(model, optimizer, strategy, recipe, classes)
    iterator = iter(tf.data.Dataset.counter().map(batch))
    for stop in (*recipe.phase_boundaries, recipe.total_steps):
        compiled.train(iterator, stop - int(compiled.step.numpy()))
    return model, compiled


def cheap_transfer(fashion_dir, folder, seed=0):
    """(pretrained, same recipe with weights='none') test accuracy on 200 images of classes 6-9
    after 30 steps on 20 training images, the pretrained one from a ResNet-8 trained 80 steps
    on 1,800 images of classes 0-5."""
    view = views.View(28, 28, 1)
    src_x, src_y = _arrays(fashion_dir, "train", SOURCE_CLASSES, 300)
    mean = src_x.reshape(-1).mean(dtype=np.float64).astype(np.float32).reshape(1)
    source = recipes.resolve("quickstart", model="resnet8", batch_size=64, steps=80,
                             warmup_steps=8, lr=0.2, seed=seed, deterministic=False)
    model, _ = _fit(source, view, src_x, src_y, len(SOURCE_CLASSES), mean)
    path = os.path.join(folder, f"source{seed}.keras")
    model.save(path)
    x, y = _arrays(fashion_dir, "train", TARGET_CLASSES, 5)
    test_x, test_y = _arrays(fashion_dir, "test", TARGET_CLASSES, 50)
    test = tf.data.Dataset.from_tensor_slices((test_x.astype(np.float32), test_y)).batch(100)
    accuracy = []
    for weights in (path, "none"):  # 'none': the plan trains every layer from step 0
        recipe = recipes.resolve("finetune", model="resnet8", weights=weights, batch_size=16,
                                 epochs=0, head_epochs=0, warmup_epochs=0, steps=30,
                                 head_steps=8, warmup_steps=3, seed=seed, deterministic=False,
                                 head_lr=0.5)  # ResNet-8's rate, as measured (see above)
        _, compiled = _fit(recipe, view, x, y, len(TARGET_CLASSES), mean)
        accuracy.append(compiled.evaluate(test)[1])
    return tuple(accuracy)


# Measured like the above (`cheap_transfer`, seeds 0-3, the scratch run the same recipe with
# weights='none', i.e. its plan from scratch): pretrained 72.0, 62.5, 70.0, 74.5 %, from scratch
# 45.0, 38.0, 51.5, 49.5 %: gaps 27.0, 24.5, 18.5, 25.0 points; margin about half the smallest.
CHEAP_MARGIN = 0.10


def test_finetuning_beats_scratch_in_brief(fashion_dir, tmp_path):
    """The default suite's short form of the comparison above, on the loop's pieces (model,
    phased steps, no run directory): a ResNet-8 trained 80 steps on classes 0-5, fine-tuned 30
    steps on 20 images of classes 6-9, beats the same 30-step recipe with weights='none' (from
    scratch) by the measured margin."""
    pretrained, scratch = cheap_transfer(fashion_dir, str(tmp_path))
    assert pretrained >= scratch + CHEAP_MARGIN, (pretrained, scratch)
