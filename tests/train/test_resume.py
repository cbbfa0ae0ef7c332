"""Crash resume: `python -m train` killed with SIGKILL at a random moment after its first
checkpoint, and again in the middle of writing a checkpoint, then re-run on the same
directory, ends with the weights of an uninterrupted run, bitwise; no checkpoint is lost or
left half-written."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

RECIPE = dict(steps=48, lr_boundaries=(24, 36), checkpoint_every=4, log_every=4, eval_every=24,
              shuffle_buffer=512, deterministic=True)


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_dir, helpers):
    """An uninterrupted run, and a run killed twice then completed (both from recipe.json)."""
    recipe = helpers.tiny_recipe(**RECIPE)
    straight, crashed = (tmp_path_factory.mktemp(n) for n in ("straight", "crashed"))
    for run_dir in (straight, crashed):
        (run_dir / "recipe.json").write_text(recipe.to_json())
    reference = _start(straight, fashion_dir, helpers)
    ckpt_dir = crashed / "checkpoints"
    events = []

    # 1. SIGKILL at a random moment after the first checkpoint.
    proc = _start(crashed, fashion_dir, helpers)
    assert _wait_for(lambda: os.path.exists(ckpt_dir / "checkpoint"), proc, poll=0.01), \
        _log(crashed)
    delay = random.Random(os.getpid()).uniform(0.0, 0.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    events.append(("random", delay, sorted(os.listdir(ckpt_dir))))

    # 2. SIGKILL while a checkpoint is being written (its ckpt-N_temp/ exists). A few tries:
    # a save can end between our look and the kill.
    for _ in range(4):
        proc = _start(crashed, fashion_dir, helpers)
        caught = _wait_for(lambda: _temp_entries(ckpt_dir), proc)
        if not caught:  # the run completed before a save could be caught
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _temp_entries(ckpt_dir)
        events.append(("during save", left, sorted(os.listdir(ckpt_dir))))
        if left:
            break

    # 3. Re-run to the end.
    final = _start(crashed, fashion_dir, helpers)
    assert final.wait(timeout=240) == 0, _log(crashed)
    assert reference.wait(timeout=240) == 0, _log(straight)
    return straight, crashed, events


def test_killed_run_resumes_to_the_same_weights(runs, helpers):
    straight, crashed, events = runs
    a, b = helpers.read_summary(straight), helpers.read_summary(crashed)
    assert b["resumed_from_step"] > 0 and b["resumed_from_step"] % RECIPE["checkpoint_every"] == 0
    assert a["weights_sha256"] == b["weights_sha256"], events
    wa = helpers.load_weights(straight / "model.keras")
    wb = helpers.load_weights(crashed / "model.keras")
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    assert a["test_loss"] == b["test_loss"]
    # metrics.csv has each step once: rows written after the last checkpoint were dropped.
    assert _train_losses(straight) == _train_losses(crashed)


def test_kill_during_save_leaves_no_broken_checkpoint(runs):
    _, crashed, events = runs
    caught = [e for e in events if e[0] == "during save" and e[1]]
    if not caught:
        pytest.skip(f"no save was caught in the act this time: {events}")
    ckpt_dir = crashed / "checkpoints"
    assert not _temp_entries(ckpt_dir), "the re-run removes ckpt-N_temp leftovers"


def test_checkpoints_are_complete_and_restorable(runs):
    import tensorflow as tf

    _, crashed, _ = runs
    ckpt_dir = str(crashed / "checkpoints")
    state = tf.train.get_checkpoint_state(ckpt_dir)
    assert state.model_checkpoint_path.endswith(f"ckpt-{RECIPE['steps']}")
    kept = list(state.all_model_checkpoint_paths)
    assert len(kept) == 3  # keep_checkpoints, the last three intervals
    for path in kept:
        names = dict(tf.train.list_variables(path))
        assert "step/.ATTRIBUTES/VARIABLE_VALUE" in names
        assert "iterator/.ATTRIBUTES/ITERATOR_STATE" in names
        step = tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE")
        assert path.endswith(f"ckpt-{step}")
    assert not _temp_entries(ckpt_dir)
