"""Fine-tuning, the training side (issue 21): the phases in the compiled steps (head-only with
BatchNorm in inference mode, then the whole net with BatchNorm frozen), resume in either phase,
the views of a recipe with weights, the random-resized crop, and the model a recipe builds
from pretrained weights. Fine-tuning against training from scratch: test_finetune_transfer.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from train import augment, recipes, steps, views
from train import model as model_lib

# ------------------------------------------------------------------------- the phases

VIEW = views.View(32, 32, 3)
MEAN = np.full(3, 100.0, np.float32)


def phased_recipe(**overrides):
    """The finetune recipe's phases at step counts: 3 head-only steps of 6, lr without warm-up.
    Without weights (He init) and given to `Steps` as it is: a run's plan (`Recipe.resolved`)
    of a recipe without weights drops its phases (test_recipes.py)."""
    fields = dict(model="resnet8", batch_size=8, epochs=0.0, head_epochs=0.0, warmup_epochs=0.0,
                  steps=6, head_steps=3, warmup_steps=0, lr_schedule="constant", weights="none",
                  deterministic=False)
    fields.update(overrides)
    return recipes.resolve("finetune", **fields)


def _batches(n=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    # Near the mean: a He-init net's BatchNorm in inference mode (moving mean 0, variance 1)
    # normalizes nothing, and full-range pixels would saturate the softmax.
    images = rng.uniform(90, 110, (n, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _values(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _changed(before, after):
    return sorted(k for k in before if not np.array_equal(before[k], after[k]))


def _setup(recipe, classes=10):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = model_lib.build_model(recipe, VIEW, MEAN, classes).model
        optimizer = steps.make_optimizer(recipe, "float32")
        optimizer.build(model.trainable_variables)
    return model, optimizer, steps.Steps(model, optimizer, strategy, recipe, classes)


def test_head_phase_trains_the_classifier_alone_with_batchnorm_statistics_unchanged():
    """Head-only steps change 'predictions' and nothing else (BatchNorm moving statistics
    bitwise equal: inference mode); the first one equals a hand-computed SGD step of a linear
    classifier on the frozen backbone's features (Nesterov: -(1 + momentum) lr g)."""
    recipe = phased_recipe()
    model, optimizer, compiled = _setup(recipe)
    (images, labels), = _batches().take(1).as_numpy_iterator()
    before = _values(model)
    features = keras.Model(model.inputs[0], model.get_layer("avg_pool").output)(
        images, training=False)
    kernel, bias = (tf.Variable(before[f"predictions/{n}"]) for n in ("kernel", "bias"))
    with tf.GradientTape() as tape:
        logits = tf.matmul(features, kernel) + bias
        onehot = tf.one_hot(labels, 10) * (1 - recipe.label_smoothing) + recipe.label_smoothing / 10
        loss = tf.reduce_mean(-tf.reduce_sum(onehot * tf.nn.log_softmax(logits), -1))
        loss += recipe.weight_decay * tf.nn.l2_loss(kernel)
    grads = tape.gradient(loss, [kernel, bias])
    lr = recipe.head_peak_lr * (1 + recipe.momentum)
    compiled.train(iter(_batches()), 1)
    after = _values(model)
    assert _changed(before, after) == ["predictions/bias", "predictions/kernel"]
    np.testing.assert_allclose(after["predictions/kernel"],
                               before["predictions/kernel"] - lr * grads[0].numpy(), atol=2e-6)
    np.testing.assert_allclose(after["predictions/bias"],
                               before["predictions/bias"] - lr * grads[1].numpy(), atol=2e-6)
    compiled.train(iter(_batches(seed=1)), 2)
    assert _changed(before, _values(model)) == ["predictions/bias", "predictions/kernel"]
    assert int(optimizer.iterations.numpy()) == 3


def test_whole_net_phase_trains_every_layer_but_frozen_batchnorm():
    """After the boundary every conv kernel moves; with freeze_bn the BatchNorm layers keep
    scale, offset and moving statistics; without it they train (the check can fail)."""
    for freeze in (True, False):
        model, _, compiled = _setup(phased_recipe(freeze_bn=freeze))
        data = iter(_batches())
        compiled.train(data, 3)
        with pytest.raises(ValueError, match="would cross the phase boundary at step 3"):
            compiled.step.assign(2)
            compiled.train(data, 2)
        compiled.step.assign(3)
        before = _values(model)
        compiled.train(data, 2)
        changed = _changed(before, _values(model))
        bn = [k for k in before if "_bn/" in k]
        kernels = [k for k in before if k.endswith("kernel")]
        assert set(kernels) <= set(changed) and len(kernels) == 8
        assert set(bn).isdisjoint(changed) if freeze else set(bn) <= set(changed)


def test_a_model_without_a_classifier_has_no_head_phase():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="features")(inputs))
    with pytest.raises(ValueError, match="no classifier layer named"):
        steps.set_phase(model, "head", freeze_bn=True)


RESUME = r"""
import sys
from train import strategies
strategies.make_deterministic(True)
import hashlib
import keras, numpy as np, tensorflow as tf
from train import model as model_lib, recipes, steps, views

recipe = recipes.resolve("finetune", model="resnet8", batch_size=8, epochs=0, head_epochs=0,
                         warmup_epochs=0, steps=8, head_steps=4, warmup_steps=1, weights="none")


def batch(i):
    key = tf.stack([tf.constant(7, tf.int64), i])
    return (tf.random.stateless_uniform([8, 32, 32, 3], key, 90.0, 110.0),
            tf.random.stateless_uniform([8], key, 0, 10, tf.int32))


def session(path=None):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = model_lib.build_model(recipe, views.View(32, 32, 3),
                                      np.full(3, 100.0, np.float32), 10).model
        optimizer = steps.make_optimizer(recipe, "float32")
        optimizer.build(model.trainable_variables)
    step, iterator = tf.Variable(0, dtype=tf.int64), iter(tf.data.Dataset.counter().map(batch))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, iterator=iterator,
                                     step=step)
    if path:
        checkpoint.restore(path).assert_consumed()
    return model, steps.Steps(model, optimizer, strategy, recipe, 10, step=step), iterator, \
        checkpoint


def digest(model):
    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.weights)).hexdigest()


def run(calls, save=None, path=None):
    model, compiled, iterator, checkpoint = session(path)
    for n in calls:
        compiled.train(iterator, n)
    return checkpoint.save(save) if save else digest(model)


out = sys.argv[1]
print("straight", run([4, 4]))
in_head = run([2], save=out + "/head")                       # stopped in the head phase,
in_whole = run([2, 2], save=out + "/whole", path=in_head)    # then in the whole-net phase
print("resumed", run([2], path=in_whole))
"""


def test_resume_in_either_phase_ends_bitwise_equal(tmp_path, helpers):
    """Stopped (and restored into a fresh model and optimizer, built before the restore) in
    the head-only phase or in the whole-net phase, a run ends with bitwise the weights of an
    uninterrupted one: the phase comes from the restored step, the optimizer holds slots for
    the variables of both phases."""
    out = helpers.run_python(RESUME, tmp_path, timeout=300).stdout.split()
    digests = dict(zip(out[::2], out[1::2]))
    assert len(digests) == 2 and len(set(digests.values())) == 1, digests


# ------------------------------------------------------------ views, crops, weights


class _Info:
    """A DatasetInfo's view-relevant part: a folder of photos of varying size, RGB."""

    name, image_shape, pad, crop_view = "folder:photos", (None, None, 3), 0, False

    @staticmethod
    def describe_sizes():
        return "sizes vary"


def test_for_recipe_is_for_dataset_without_weights():
    """Every shipped recipe's view is exactly `for_dataset`'s (export reads the same)."""
    from train import data

    info = data.DatasetInfo("fashion_mnist", 10, (28, 28, 1), 60_000, 10_000, (), pad=2)
    for recipe in recipes.RECIPES.values():
        if recipe.weights == "none":
            assert views.for_recipe(info, recipe) == views.for_dataset(
                info, recipe.image_size, recipe.augment), recipe.name
    scratch = recipes.resolve("finetune", weights="none")
    assert views.for_recipe(_Info, scratch) == views.View(224, 224, 3, "center_crop",
                                                          resize_shorter=256)
    assert views.for_recipe(_Info, scratch.replace(crop_fraction=0.95)).resize_shorter == 236


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """model.keras of an untrained 6-class ResNet-8 at 36 px (mean 110, as a run saves it) and
    a bare .weights.h5 of it."""
    keras.utils.set_random_seed(1)
    recipe = recipes.resolve("smoke", model="resnet8")
    model = model_lib.build_model(recipe, views.View(36, 36, 3), np.full(3, 110.0), 6).model
    folder = tmp_path_factory.mktemp("tiny_source")
    model.save(folder / "model.keras")
    model.save_weights(folder / "bare.weights.h5")
    return model, str(folder / "model.keras"), str(folder / "bare.weights.h5")


def test_views_with_weights_take_the_weight_sets_size_and_crop(tiny_source):
    _, keras_file, _ = tiny_source
    recipe = recipes.resolve("finetune", model="resnet8", weights=keras_file)
    assert views.for_recipe(_Info, recipe) == views.View(36, 36, 3, "center_crop",
                                                         resize_shorter=41)  # 36 / 0.875
    assert views.for_recipe(_Info, recipe.replace(image_size=48, crop_fraction=0.8)) == \
        views.View(48, 48, 3, "center_crop", resize_shorter=60)


def test_build_model_loads_the_backbone_and_records_the_weights(tiny_source):
    """The source's layers arrive bitwise, the 4-class head stays at initialization, the
    normalization is the source's own (its mean layer), and the record names the file."""
    source, keras_file, bare = tiny_source
    recipe = recipes.resolve("finetune", model="resnet8", weights=keras_file)
    built = model_lib.build_model(recipe, views.View(36, 36, 3), None, 4)
    src = {v.path: v.numpy() for v in source.weights}
    got = {v.path: v.numpy() for v in built.model.weights}
    backbone = [k for k in src if not k.startswith("predictions/")]
    assert len(backbone) > 20 and all(np.array_equal(src[k], got[k]) for k in backbone)
    assert got["predictions/kernel"].shape == (64, 4)
    layer = built.model.get_layer("mean_subtraction")
    np.testing.assert_array_equal(layer.mean, [110.0] * 3)
    w = built.weights
    assert (w["tag_or_path"], w["source"], w["layers_left_at_init"], w["adapted"]) == (
        keras_file, "file", ["predictions"], [])
    import hashlib

    with open(keras_file, "rb") as f:
        assert w["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert model_lib.build_model(recipe.replace(weights="none"), views.View(36, 36, 3),
                                 np.zeros(3), 4).weights == {}
    with pytest.raises(ValueError, match="Set the recipe field weights_normalization"):
        model_lib.build_model(recipe.replace(weights=bare), views.View(36, 36, 3), None, 4)
    torch_norm = model_lib.build_model(recipe.replace(weights=bare, weights_normalization="torch"),
                                       views.View(36, 36, 3), None, 4)
    np.testing.assert_allclose(torch_norm.model.get_layer("mean_subtraction").std,
                               [58.395, 57.12, 57.375], rtol=1e-6)


def _image(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_random_resized_crop_is_a_function_of_its_seed():
    """Same seed, same crop (resume and reruns need it); other seeds, other crops; output at
    the view's size in whole pixel values."""
    image = _image()
    out = [augment.random_resized_crop(image, tf.constant([0, s], tf.int64), size=(24, 24))
           for s in (0, 0, 1, 2)]
    assert out[0].shape == (24, 24, 3) and out[0].dtype == tf.float32
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.array_equal(out[0], out[2]) and not np.array_equal(out[2], out[3])
    assert np.all(np.round(out[0]) == out[0]) and 0 <= out[0].numpy().min() <= 255


def test_random_resized_crop_of_the_whole_image_is_its_resize_or_its_mirror():
    """With the box forced to the whole image (area 1, the image's aspect), the crop is the
    evaluation view's resize of the image (PIL-independent: `views.resize` at that size),
    flipped for about half of the seeds."""
    image = _image(30, 45)
    reference = views.resize(image, views.View(20, 30, 3)).numpy()
    flips = 0
    for s in range(16):
        got = augment.random_resized_crop(image, tf.constant([3, s], tf.int64), size=(20, 30),
                                          area=(1.0, 1.0), ratio=(1.5, 1.5)).numpy()
        flipped = np.array_equal(got, reference[:, ::-1])
        assert flipped or np.array_equal(got, reference), s
        flips += flipped
    assert 3 <= flips <= 13  # binomial(16, 1/2): outside [3, 13] with probability 0.004


def test_augment_image_dispatches_the_per_image_augmentations():
    view = views.View(24, 24, 3, "center_crop")
    seed = tf.constant([0, 5], tf.int64)
    np.testing.assert_array_equal(
        augment.augment_image("random_resized_crop", _image(), seed, view),
        augment.random_resized_crop(_image(), seed, size=(24, 24)))
    assert augment.augment_image("imagenet", _image(), seed, view).shape == (24, 24, 3)
    assert set(augment.PER_IMAGE) < set(augment.AUGMENTATIONS) == set(recipes.AUGMENTATIONS)
    with pytest.raises(ValueError, match="not a per-image augmentation"):
        augment.augment_image("cifar", _image(), seed, view)


def test_a_head_for_other_classes_of_the_same_count_starts_fresh(tmp_path):
    """A run's model.keras whose labels.txt names other classes than the dataset's: its
    classifier is not loaded even though the counts match (it would predict the old classes);
    with the same names it is (continuing a run's task)."""
    keras.utils.set_random_seed(2)
    source = model_lib.build_model(recipes.resolve("smoke", model="resnet8"), views.View(36, 36, 3),
                                   np.full(3, 110.0), 4).model
    source.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\nthree\n")
    recipe = recipes.resolve("finetune", model="resnet8", weights=str(tmp_path / "model.keras"))
    head = source.get_layer("predictions").get_weights()[0]
    other = model_lib.build_model(recipe, views.View(36, 36, 3), None, 4,
                                  class_names=("five", "six", "seven", "eight"))
    assert other.weights["layers_left_at_init"] == ["predictions"]
    assert "other classes" in other.weights["new_head"]
    assert not np.array_equal(other.model.get_layer("predictions").get_weights()[0], head)
    same = model_lib.build_model(recipe, views.View(36, 36, 3), None, 4,
                                 class_names=("zero", "one", "two", "three"))
    assert same.weights["layers_left_at_init"] == [] and "new_head" not in same.weights
    np.testing.assert_array_equal(same.model.get_layer("predictions").get_weights()[0], head)
