"""The training loop on one device: the run directory it writes, resume of a finished run,
recipe checks, weight decay on kernels only, the plateau rule, mixed precision."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from train import data, loop, recipes, schedules, session, steps, views
from train import model as model_lib


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_dir, helpers):
    recipe = helpers.tiny_recipe()
    run_dir = tmp_path_factory.mktemp("run")
    summary = loop.train(recipe, str(run_dir), "one_device", data_dir=fashion_dir, verbose=0)
    return recipe, run_dir, summary


def test_run_directory(tiny_run, fashion_dir):
    recipe, run_dir, summary = tiny_run
    # labels.txt: the dataset's class names in label order, one a line (export.evaluate)
    info = data.load("fashion_mnist", "test[:1]", data_dir=fashion_dir)[1]
    assert (run_dir / "labels.txt").read_text() == "".join(f"{n}\n" for n in info.class_names)
    assert len(info.class_names) == 10 and info.class_names[0] == "T-shirt/top"
    assert recipes.Recipe.from_json((run_dir / "recipe.json").read_text()) == recipe
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["steps"] == 12 and summary["replicas"] == 1
    assert summary["precision"] == "float32" and summary["resumed_from_step"] == 0
    assert summary["weights"] == {}  # from scratch: no pretrained weights to record
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["images_per_sec"] > 0
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [bool(r["eval_accuracy"]) for r in rows] == [False, False, True, False, False, True]
    lrs = [float(r["lr"]) for r in rows]  # lr for the next step: /10 at 6 and at 9
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)

    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-4", "ckpt-8", "ckpt-12"]

    for picture in ("confusion.png", "mistakes.png"):  # train.confusion's error report
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (events,) = (run_dir / "logs").glob("events.out.tfevents.*")
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events))
            for v in e.summary.value}
    assert {"train/loss", "train/accuracy", "learning_rate", "eval/loss",
            "eval/accuracy"} <= tags


def test_saved_model_takes_raw_pixels(tiny_run, fashion_dir):
    """model.keras subtracts the per-pixel mean itself; its accuracy on the raw uint8 test
    images, computed here with predict, is the summary's."""
    recipe, run_dir, summary = tiny_run
    model = keras.saving.load_model(run_dir / "model.keras")
    ds, info = data.load("fashion_mnist", recipe.test_split, data_dir=fashion_dir)
    images, labels = (np.stack(x) for x in zip(*ds.as_numpy_iterator()))
    train, train_info = data.load("fashion_mnist", recipe.train_split, data_dir=fashion_dir)
    train_images = np.stack([x for x, _ in train.as_numpy_iterator()]).astype(np.float64)
    mean = np.pad(train_images.mean(axis=0), [(2, 2), (2, 2), (0, 0)])  # the padded view's
    norm = model.get_layer("mean_subtraction")
    np.testing.assert_allclose(norm.mean, mean, atol=3e-5)  # float32 of float64 sums
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)]).astype("float32")
    probs = model.predict(padded, verbose=0)
    assert probs.shape == (len(labels), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    # The summary's per-class table (the error report) counts the same predictions.
    rows = {row["class"]: row for row in summary["per_class"]}
    for c, name in enumerate(info.class_names):
        support = int(np.sum(labels == c))
        assert rows[name]["support"] == support
        if support:
            recall = float(np.mean(predicted[labels == c] == c))
            assert rows[name]["recall"] == pytest.approx(recall, abs=1e-9)


def test_finished_run_returns_its_summary(tiny_run, fashion_dir):
    recipe, run_dir, summary = tiny_run
    assert loop.train(recipe, str(run_dir), "one_device", data_dir=fashion_dir) == summary
    assert loop.train(None, str(run_dir), "one_device", data_dir=fashion_dir) == summary


def test_run_dir_with_another_recipe_raises(tiny_run, fashion_dir):
    recipe, run_dir, _ = tiny_run
    with pytest.raises(ValueError, match=r"different recipe \(lr: saved 0.1, requested 0.2\)"):
        loop.train(recipe.replace(lr=0.2), str(run_dir), "one_device", data_dir=fashion_dir)


def test_bad_input_raises(tmp_path, fashion_dir, helpers):
    with pytest.raises(ValueError, match="no recipe given"):
        loop.train(None, str(tmp_path / "empty"), "one_device")
    with pytest.raises(ValueError, match="unknown strategy 'gpus'"):
        loop.train(helpers.tiny_recipe(), str(tmp_path / "a"), "gpus")
    with pytest.raises(ValueError, match="resnet_8"):
        loop.train(helpers.tiny_recipe(model="resnet_8"), str(tmp_path / "b"), "one_device",
                   data_dir=fashion_dir)
    with pytest.raises(ValueError, match="6n"):
        loop.train(helpers.tiny_recipe(model="resnet9"), str(tmp_path / "c"), "one_device",
                   data_dir=fashion_dir)
    # A run that could not start leaves no recipe.json to conflict with a corrected one.
    assert not (tmp_path / "b" / "recipe.json").exists()


VIEW = views.View(32, 32, 1)
MEAN = np.full((32, 32, 1), 100.0, np.float32)


def _build(recipe):
    built = model_lib.build_model(recipe, VIEW, MEAN, 10)
    return built if isinstance(built, keras.Model) else built.model


@pytest.mark.parametrize("model,shortcut,projections", [
    ("resnet8", "default", 0), ("resnet8", "B", 2), ("resnet8", "C", 3), ("plain8", "default", 0),
])
def test_build_model_shortcut_field(helpers, model, shortcut, projections):
    """Recipe field `shortcut` picks the option of sec. 3.3 (CIFAR nets default to A)."""
    built = _build(helpers.tiny_recipe(model=model, shortcut=shortcut))
    names = [layer.name for layer in built.layers]
    assert names[:2] == ["image", "mean_subtraction"]
    assert sum(n.endswith("_0_conv") for n in names) == projections
    assert built.output_shape == (None, 10)


@pytest.mark.parametrize("zero_init", [False, True])
def test_build_model_zero_init_residual_field(helpers, zero_init):
    """Recipe field `zero_init_residual` reaches the model: resnet8's 3 blocks start with their
    last BN scale at 0 (each block an identity), and only those."""
    built = _build(helpers.tiny_recipe(model="resnet8", zero_init_residual=zero_init))
    zeroed = sorted(layer.name for layer in built.layers
                    if isinstance(layer, keras.layers.BatchNormalization)
                    and not np.any(layer.gamma.numpy()))
    assert zeroed == (["conv2_block1_2_bn", "conv3_block1_2_bn", "conv4_block1_2_bn"]
                      if zero_init else [])


def test_plain_net_with_shortcut_raises(helpers):
    with pytest.raises(ValueError, match="plain net"):
        _build(helpers.tiny_recipe(model="plain8", shortcut="B"))


def test_weight_decay_is_l2_on_kernels_only(helpers):
    """One SGD step with and without weight decay, from the same weights on the same batch,
    differs by exactly -lr * wd * w0 on conv and dense kernels (Caffe's weight_decay:
    gradient wd * w), and not at all elsewhere. Synthetic batch, the loop's own step."""
    lr, wd = 0.1, 0.5
    recipe = helpers.tiny_recipe(lr=lr, lr_schedule="constant", lr_boundaries=())
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (16, 32, 32, 1)).astype(np.float32),
             rng.integers(0, 10, 16).astype(np.int32))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    weights = {}
    for decay in (0.0, wd):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = _build(recipe)
            optimizer = steps.make_optimizer(recipe, "float32")
            optimizer.build(model.trainable_variables)
        initial = {v.path: v.numpy() for v in model.weights}
        step_fn = steps.Steps(model, optimizer, strategy, recipe.replace(weight_decay=decay), 10)
        step_fn.train(iter(tf.data.Dataset.from_tensors(batch)), 1)
        weights[decay] = {v.path: v.numpy() for v in model.weights}
    kernels = [k for k in initial if k.endswith("kernel")]
    assert len(kernels) == 8  # 7 convs (ResNet-8, option A shortcuts) + the classifier
    for name, w0 in initial.items():
        delta = weights[wd][name] - weights[0.0][name]
        if name in kernels:
            np.testing.assert_allclose(delta, -lr * wd * w0, rtol=1e-4, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(delta, 0.0, err_msg=name)


def test_plateau_divides_lr_after_patience():
    recipe = recipes.resolve("paper_imagenet", plateau_patience=2, plateau_min_delta=0.01)
    optimizer = keras.optimizers.SGD(schedules.learning_rate(recipe))
    optimizer.build([keras.Variable(np.zeros(2, np.float32))])
    counters = session.Counters.create()
    lrs = []
    for error in (0.5, 0.4, 0.395, 0.39, 0.3, 0.3, 0.3, 0.3):
        loop.plateau_update(recipe, optimizer, error, counters)
        lrs.append(round(float(optimizer.learning_rate.numpy()), 8))
    # 0.395 and 0.39 improve by < 0.01 -> /10; 0.3 improves; two more flat -> /10 again.
    assert lrs == [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]


def test_modern_path_bfloat16_cosine_label_smoothing_epochs(tmp_path, fashion_dir, helpers):
    """A length in epochs: 512 images at batch 16 are 32 steps an epoch, so 1/8 epoch is 4
    steps and the warm-up's 1/16 is 2; `steps` plays no part. recipe.json keeps the epochs."""
    recipe = helpers.tiny_recipe(
        steps=1000, epochs=0.125, lr_schedule="cosine", lr_boundaries=(), warmup="linear",
        warmup_epochs=0.0625, warmup_lr=0.0, label_smoothing=0.1,
        mixed_precision="mixed_bfloat16", lr_base_batch=32, nesterov=True, checkpoint_every=2,
        eval_every=4, log_every=1)
    summary = loop.train(recipe, str(tmp_path / "run"), "one_device", data_dir=fashion_dir,
                         verbose=0)
    assert recipes.Recipe.from_json((tmp_path / "run" / "recipe.json").read_text()) == recipe
    assert summary["steps"] == 4 and summary["epochs"] == round(4 * 16 / 512, 2)
    assert summary["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # restored after training
    assert np.isfinite(summary["test_loss"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    with open(tmp_path / "run" / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # lr for the next step: linear warm-up to 0.1 * 16 / 32 = 0.05 at step 2, cosine to 0.
    np.testing.assert_allclose(lrs, [0.025, 0.05, 0.025, 0.0], atol=1e-7)


@pytest.mark.parametrize("every", [100, 3])
def test_training_calls_stop_at_every_log_evaluation_checkpoint_and_phase(helpers, every):
    """One `Steps.train` call never crosses a log, evaluation, checkpoint or phase boundary
    (the head-only phase's end) and runs at most `steps_per_execution` steps."""
    plan = helpers.tiny_recipe(steps=40, head_steps=7, lr_schedule="constant", lr_boundaries=(),
                               log_every=10, eval_every=15, checkpoint_every=25,
                               steps_per_execution=every)
    assert plan.phase_boundaries == (7,)
    required = {t for t in range(1, 41) if t % 10 == 0 or t % 15 == 0 or t % 25 == 0} | {7, 40}
    ends, step = [], 0
    while step < plan.total_steps:
        step = loop._next_stop(plan, step)
        ends.append(step)
    assert required <= set(ends) and ends == sorted(set(ends))
    gaps = np.diff([0] + ends)
    assert gaps.max() <= every
    if every >= 40:
        assert ends == sorted(required)


def test_cli_reports_bad_flags(tmp_path, helpers):
    proc = helpers.run_python(
        "from train.__main__ import run; run()", f"--run_dir={tmp_path}", "--set=bogus=1",
        check=False, timeout=120)
    assert proc.returncode == 2
    assert "unknown recipe field 'bogus'" in proc.stderr


def test_cli_stops_on_broken_images_with_bad_images_fail(tmp_path, helpers):
    """bad_images='fail' names the broken file and exits 2 before training, no traceback."""
    from PIL import Image

    for k in range(2):
        (tmp_path / "photos" / f"c{k}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 12), (40 * i, 80 * k, 9)).save(
                tmp_path / "photos" / f"c{k}" / f"{i}.jpg")
    whole = (tmp_path / "photos" / "c1" / "2.jpg").read_bytes()
    (tmp_path / "photos" / "c1" / "2.jpg").write_bytes(whole[:len(whole) // 2])  # cut short
    proc = helpers.run_python(
        "from train.__main__ import run; run()", f"--run_dir={tmp_path / 'run'}",
        "--recipe=smoke", f"--dataset=folder:{tmp_path / 'photos'}", "--image_size=16",
        "--set=bad_images=fail", check=False, timeout=120,
        env=helpers.subprocess_env(KERAS_HOME=tmp_path / "keras_home"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: 1 broken image(s)" in proc.stderr and "c1/2.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("tf_config, name", [
    (None, "native.log"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}},
     "native.log"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}},
     "native.worker-0.log"),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}},
     "native.log"),  # no chief: worker 0 is the chief
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}},
     "native.worker-1.log"),
])
def test_each_process_of_a_cluster_has_its_own_native_log(tmp_path, monkeypatch, tf_config,
                                                          name):
    from train import rundir

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert rundir.RunDir(str(tmp_path)).native_log() == str(tmp_path / name)


FIRST_RUN = """
import sys
from train import loop, recipes, strategies
strategies.make_deterministic(True)
fresh, runs = sys.argv[1], sys.argv[2]
recipe = recipes.resolve("smoke", model="resnet8", batch_size=16, steps=2, scale=1.0,
                         lr_boundaries=(1, 2), train_split="train[:64]", eval_split="test[:16]",
                         test_split="test[:16]", shuffle_buffer=64, log_every=1, eval_every=2)
first = loop.train(recipe, runs + "/first", "one_device", data_dir=fresh, verbose=0)
again = loop.train(recipe, runs + "/again", "one_device", data_dir=fresh, verbose=0)
print(first["weights_sha256"], again["weights_sha256"])
"""


def test_a_first_run_that_prepares_the_data_ends_like_a_later_run(tmp_path, helpers):
    """The first run on a machine prepares Fashion-MNIST; TFDS's preparation draws from
    Python's `random`, where Keras' initializers take their seeds, so the quickstart's first
    run once ended with other weights than every later run (92.43% vs 92.32%)."""
    proc = helpers.run_python(FIRST_RUN, tmp_path / "tfds", tmp_path, timeout=400)
    first, again = proc.stdout.split()[-2:]
    assert first == again
