"""The one training loop under tf.distribute: MirroredStrategy over 2 logical CPUs and two
MultiWorkerMirroredStrategy worker processes on localhost give the numbers of one device with
the same global batch (synchronized BatchNorm). Also documents keras-team/keras#20585: stock
`model.fit` under MultiWorkerMirroredStrategy still fails.

"The same numbers" up to float32 rounding, measured, not tuned: 2 replicas sum gradients and
BatchNorm statistics in another order than one device. In float64 the two runs agree to 1e-7
over these 6 steps, so any larger float32 difference is rounding. Its size depends on the
kernels: measured with ONEDNN_MAX_CPU_ISA=AVX512/AVX2/AVX/SSE41 and with TensorFlow's Eigen
kernels (TF_ENABLE_ONEDNN_OPTS=0, the default of AVX2-only CPUs), the first step's losses agree
to 2e-7 relative and the later ones to 1.2e-3 relative (AVX2 kernels; 1e-6 with AVX-512). A
real bug is larger: BatchNorm left unsynchronized moves the first loss by 3.4e-3 relative and
the sixth by 2.5e-2. The first step is therefore compared tightly, the rest relatively.

Each run is a fresh process: logical devices and TF_CONFIG must be set before TensorFlow
starts.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

STEPS = 6
RECIPE = dict(steps=STEPS, lr_boundaries=(3, 5), checkpoint_every=3, log_every=1, eval_every=3,
              synchronized_bn=True, deterministic=True)

MIRRORED_VS_ONE_DEVICE = r"""
import json, sys
from train import loop, recipes, strategies
strategies.make_deterministic(True)
strategies.split_cpu(2)
recipe = recipes.Recipe.from_json(open(sys.argv[1]).read())
out = {}
for name in ("mirrored", "one_device"):
    summary = loop.train(recipe, sys.argv[2] + "/" + name, name, data_dir=sys.argv[3], verbose=0)
    out[name] = summary
print("RESULT" + json.dumps(out))
"""

WORKER = r"""
import json, os, sys
from train import loop, recipes, strategies
recipe = recipes.Recipe.from_json(open(sys.argv[1]).read())
strategies.make_deterministic(recipe.deterministic)  # before the strategy starts TensorFlow
strategy = strategies.make_strategy(sys.argv[4])
summary = loop.train(recipe, sys.argv[2], strategy, data_dir=sys.argv[3], verbose=0)
result = {"summary": summary, "fit_error": None}
if strategy.num_replicas_in_sync > 1:
    # keras-team/keras#20585: stock fit on the same strategy, a tiny model, one step.
    import numpy as np, tensorflow as tf, keras
    x = np.random.RandomState(0).rand(8, 4).astype("float32")
    y = np.arange(8) % 2
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    try:
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(ds, epochs=1, verbose=0)
    except Exception as e:  # the failure we document
        result["fit_error"] = f"{type(e).__name__}: {str(e)[:300]}"
print("RESULT" + json.dumps(result))
"""


def _result(stdout):
    line = [x for x in stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def _train_losses(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return np.array([float(r["train_loss"]) for r in csv.DictReader(f)])


# See the module docstring for the measurements behind these two.
FIRST_STEP_RTOL = 1e-5  # measured <= 2e-7; unsynchronized BatchNorm: 3.4e-3
LATER_RTOL = 5e-3  # measured <= 1.2e-3; unsynchronized BatchNorm: up to 2.5e-2


def assert_same_training(replicated, single):
    np.testing.assert_allclose(replicated[0], single[0], rtol=FIRST_STEP_RTOL, atol=0)
    np.testing.assert_allclose(replicated, single, rtol=LATER_RTOL, atol=0)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, helpers):
    path = tmp_path_factory.mktemp("recipe") / "recipe.json"
    path.write_text(helpers.tiny_recipe(**RECIPE).to_json())
    return path


@pytest.fixture(scope="module")
def mirrored_runs(recipe_file, fashion_dir, tmp_path_factory, helpers):
    root = tmp_path_factory.mktemp("mirrored")
    proc = helpers.run_python(MIRRORED_VS_ONE_DEVICE, recipe_file, root, fashion_dir)
    return root, _result(proc.stdout)


@pytest.fixture(scope="module")
def multi_worker_runs(recipe_file, fashion_dir, tmp_path_factory, helpers):
    """Two MultiWorkerMirroredStrategy workers and, meanwhile, one single-process run."""
    root = tmp_path_factory.mktemp("multi_worker")
    ports = helpers.free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = helpers.subprocess_env(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(recipe_file), str(root / "workers"),
             fashion_dir, "multi_worker"],
            cwd=helpers.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    single = helpers.run_python(WORKER, recipe_file, root / "single", fashion_dir, "one_device")
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-6000:]
        results.append(_result(out))
    return root, results, _result(single.stdout)


def test_mirrored_two_cpus_matches_one_device(mirrored_runs):
    root, out = mirrored_runs
    assert out["mirrored"]["replicas"] == 2 and out["one_device"]["replicas"] == 1
    assert out["mirrored"]["synchronized_bn"] and out["one_device"]["synchronized_bn"]
    mirrored, single = (_train_losses(root / n) for n in ("mirrored", "one_device"))
    assert len(mirrored) == STEPS
    assert_same_training(mirrored, single)
    np.testing.assert_allclose(out["mirrored"]["test_loss"], out["one_device"]["test_loss"],
                               rtol=LATER_RTOL)


def test_two_workers_have_identical_weights(multi_worker_runs):
    _, (chief, worker), _ = multi_worker_runs
    assert chief["summary"]["replicas"] == 2 and "2 workers" in chief["summary"]["strategy"]
    assert chief["summary"]["weights_sha256"] == worker["summary"]["weights_sha256"]
    assert chief["summary"]["test_loss"] == worker["summary"]["test_loss"]


def test_two_workers_match_single_process(multi_worker_runs):
    root, (chief, _), single = multi_worker_runs
    assert single["summary"]["replicas"] == 1
    assert_same_training(_train_losses(root / "workers"), _train_losses(root / "single"))
    # Only the chief wrote the run directory.
    assert sorted(os.listdir(root / "workers" / "checkpoints")) == sorted(
        os.listdir(root / "single" / "checkpoints"))


def test_two_workers_bitwise_equal_mirrored(multi_worker_runs, mirrored_runs):
    """Two workers and two logical CPUs in one process reduce the same way."""
    _, (chief, _), _ = multi_worker_runs
    _, out = mirrored_runs
    assert chief["summary"]["weights_sha256"] == out["mirrored"]["weights_sha256"]


@pytest.mark.xfail(strict=True, reason="keras-team/keras#20585: Keras 3 `fit` fails under "
                   "MultiWorkerMirroredStrategy; when this passes, upstream fixed it and the "
                   "custom loop could be reconsidered.")
def test_stock_fit_under_multi_worker(multi_worker_runs):
    _, results, _ = multi_worker_runs
    errors = [r["fit_error"] for r in results]
    assert errors == [None, None], errors
