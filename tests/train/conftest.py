"""Shared fixtures of the train/ tests: offline Fashion-MNIST, tiny recipes, subprocesses."""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_recipe(**overrides):
    """ResNet-8 on a 512-image slice of Fashion-MNIST, batch 16: a few seconds of training.
    Not deterministic by default: op determinism is process-wide, and in-process tests must
    not switch it on for the rest of the session (subprocess tests ask for it)."""
    from train import recipes

    fields = dict(
        name="tiny", model="resnet8", dataset="fashion_mnist", batch_size=16, steps=12,
        scale=1.0, lr_boundaries=(6, 9), train_split="train[:512]", eval_split="test[:67]",
        test_split="test[:67]",
        shuffle_buffer=64, checkpoint_every=4, log_every=2, eval_every=6, deterministic=False,
    )
    fields.update(overrides)
    return recipes.resolve("smoke", **fields)


def _subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run_python(code, *args, timeout=240, env=None, check=True):
    """Runs `code` in a fresh Python (TensorFlow state cannot be reset in-process)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env or _subprocess_env(),
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def _free_ports(n):
    """n distinct free TCP ports on localhost."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _load_weights(path):
    """The float weights of a saved `.keras` model, by variable path."""
    import keras

    import keras_resnet  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(path)
    return {v.path: v.numpy() for v in model.weights}


def _read_summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


class Helpers:
    """Helper functions for the tests, handed out by the `helpers` fixture."""

    repo = REPO
    tiny_recipe = staticmethod(_tiny_recipe)
    subprocess_env = staticmethod(_subprocess_env)
    run_python = staticmethod(_run_python)
    free_ports = staticmethod(_free_ports)
    load_weights = staticmethod(_load_weights)
    read_summary = staticmethod(_read_summary)


@pytest.fixture(scope="session")
def helpers():
    return Helpers
