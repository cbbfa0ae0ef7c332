"""Training room: datasets, views, pipelines, recipes and the one training loop (TensorFlow).

    from train import loop, recipes
    summary = loop.train(recipes.resolve("smoke"), "runs/smoke")

Importing `train` changes nothing in the process (environment, file descriptors, logging).
What the command lines do to their own process before TensorFlow's import (oneDNN kernels,
native log lines off the terminal) is `train.console`, which they call first.
"""

# export.formats still imports it from here; it lives in train.console.
from train.console import native_stderr_quiet  # noqa: F401
