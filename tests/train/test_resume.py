"""Crash resume and reproducibility at the CLI's real size: the smoke recipe (ResNet-20, batch
128, all 60,000 Fashion-MNIST training images, evaluated on all 10,000 test images).
`python -m train` killed with SIGKILL at random moments after its first checkpoint, and in the
middle of writing a checkpoint, then re-run on the same directory, ends with the weights of an
uninterrupted run, bitwise; two uninterrupted runs are bitwise equal; no checkpoint is lost or
left half-written. The default suite runs 48 steps; the slow one all 400, killed 4 times."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

SHORT = dict(steps=48, lr_boundaries=(24, 36), checkpoint_every=8, log_every=4, eval_every=24)
FULL = dict(checkpoint_every=50)  # the smoke recipe's own 400 steps


def _command(run_dir, fashion_dir):
    # No --recipe: the CLI takes run_dir's recipe.json, as a user's re-run would.
    return [sys.executable, "-m", "train", f"--run_dir={run_dir}", f"--data_dir={fashion_dir}",
            "--strategy=one_device", "--verbose=0"]


def _start(run_dir, fashion_dir, helpers):
    """Starts the CLI; its output goes to a log file beside run_dir (a pipe could fill up)."""
    log = open(f"{run_dir}.log", "a")
    proc = subprocess.Popen(_command(run_dir, fashion_dir), cwd=helpers.repo,
                            env=helpers.subprocess_env(), stdout=log, stderr=log)
    log.close()
    return proc


def _log(run_dir):
    with open(f"{run_dir}.log") as f:
        return f.read()[-6000:]


def _wait_for(predicate, proc, timeout=180, poll=0.0002):
    """Polls `predicate()` until true; False if `proc` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    proc.kill()
    raise AssertionError("timed out")


def _temp_entries(ckpt_dir):
    try:
        return [n for n in os.listdir(ckpt_dir) if "_temp" in n]
    except FileNotFoundError:
        return []


def _train_losses(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [(int(r["step"]), r["train_loss"]) for r in csv.DictReader(f)]


def _kill_at_random(crashed, fashion_dir, helpers, events, rng):
    """Starts the run and SIGKILLs it at a random moment after its first checkpoint."""
    ckpt_dir = crashed / "checkpoints"
    proc = _start(crashed, fashion_dir, helpers)
    assert _wait_for(lambda: os.path.exists(ckpt_dir / "checkpoint"), proc, poll=0.01), \
        _log(crashed)
    delay = rng.uniform(0.0, 3.0)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    events.append(("random", round(delay, 2), sorted(os.listdir(ckpt_dir))))
    return True


def _kill_during_save(crashed, fashion_dir, helpers, events):
    """SIGKILL while a checkpoint is written (its ckpt-N_temp/ exists); a few tries, since a
    save can end between our look and the kill."""
    ckpt_dir = crashed / "checkpoints"
    for _ in range(4):
        proc = _start(crashed, fashion_dir, helpers)
        if not _wait_for(lambda: _temp_entries(ckpt_dir), proc):
            return  # the run completed before a save could be caught
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _temp_entries(ckpt_dir)
        events.append(("during save", left, sorted(os.listdir(ckpt_dir))))
        if left:
            return


def _runs(tmp_path_factory, fashion_dir, helpers, overrides, random_kills, twice=False):
    """An uninterrupted run (or two), and a run killed several times then completed, all
    from recipe.json, as a user's re-run would."""
    from train import recipes

    recipe = recipes.resolve("smoke", **overrides)
    names = ("straight", "crashed") + (("again",) if twice else ())
    dirs = [tmp_path_factory.mktemp(n) for n in names]
    for run_dir in dirs:
        (run_dir / "recipe.json").write_text(recipe.to_json())
    straight, crashed = dirs[:2]
    references = [_start(d, fashion_dir, helpers) for d in dirs[2:]] + \
        [_start(straight, fashion_dir, helpers)]
    events, rng = [], random.Random(os.getpid())
    for _ in range(random_kills):
        if not _kill_at_random(crashed, fashion_dir, helpers, events, rng):
            break
    _kill_during_save(crashed, fashion_dir, helpers, events)
    final = _start(crashed, fashion_dir, helpers)
    assert final.wait(timeout=1200) == 0, _log(crashed)
    for proc, run_dir in zip(references, dirs[2:] + [straight]):
        assert proc.wait(timeout=1200) == 0, _log(run_dir)
    return dirs, events, recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_dir, helpers):
    return _runs(tmp_path_factory, fashion_dir, helpers, SHORT, random_kills=1)


def _assert_resumed_equals_straight(dirs, events, recipe, helpers):
    straight, crashed = dirs[:2]
    a, b = helpers.read_summary(straight), helpers.read_summary(crashed)
    assert (a["model"], a["global_batch_size"], a["test_images"]) == ("resnet20", 128, 10_000)
    assert b["resumed_from_step"] > 0 and b["resumed_from_step"] % recipe.checkpoint_every == 0
    assert a["deterministic"] and b["deterministic"]
    assert a["weights_sha256"] == b["weights_sha256"], events
    wa = helpers.load_weights(straight / "model.keras")
    wb = helpers.load_weights(crashed / "model.keras")
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    assert a["test_loss"] == b["test_loss"]
    # metrics.csv has each step once: rows written after the last checkpoint were dropped.
    assert _train_losses(straight) == _train_losses(crashed)
    for again in dirs[2:]:
        assert helpers.read_summary(again)["weights_sha256"] == a["weights_sha256"]


def test_killed_run_resumes_to_the_same_weights(runs, helpers):
    _assert_resumed_equals_straight(*runs, helpers)


@pytest.mark.slow
def test_full_smoke_run_killed_four_times_equals_two_uninterrupted_ones(tmp_path_factory,
                                                                         fashion_dir, helpers):
    dirs, events, recipe = _runs(tmp_path_factory, fashion_dir, helpers, FULL, random_kills=4,
                                 twice=True)
    assert len([e for e in events if e[0] == "random"]) >= 3, events
    _assert_resumed_equals_straight(dirs, events, recipe, helpers)


def test_kill_during_save_leaves_no_broken_checkpoint(runs):
    (_, crashed), events, _ = runs[0][:2], runs[1], runs[2]
    caught = [e for e in events if e[0] == "during save" and e[1]]
    if not caught:
        pytest.skip(f"no save was caught in the act this time: {events}")
    ckpt_dir = crashed / "checkpoints"
    assert not _temp_entries(ckpt_dir), "the re-run removes ckpt-N_temp leftovers"


def test_checkpoints_are_complete_and_restorable(runs):
    import tensorflow as tf

    (_, crashed), _, recipe = runs[0][:2], runs[1], runs[2]
    ckpt_dir = str(crashed / "checkpoints")
    state = tf.train.get_checkpoint_state(ckpt_dir)
    assert state.model_checkpoint_path.endswith(f"ckpt-{recipe.total_steps}")
    kept = list(state.all_model_checkpoint_paths)
    assert len(kept) == 3  # keep_checkpoints, the last three intervals
    for path in kept:
        names = dict(tf.train.list_variables(path))
        assert "step/.ATTRIBUTES/VARIABLE_VALUE" in names
        assert "iterator/.ATTRIBUTES/ITERATOR_STATE" in names
        step = tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE")
        assert path.endswith(f"ckpt-{step}")
        assert os.path.getsize(path + ".data-00000-of-00001") < 10 * 2**20  # no data buffer
    assert not _temp_entries(ckpt_dir)
