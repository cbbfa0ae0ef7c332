"""Training room: datasets, views, pipelines, recipes and the one training loop (TensorFlow).

    from train import loop, recipes
    summary = loop.train(recipes.resolve("smoke"), "runs/smoke")

Importing `train` changes nothing in the process (environment, file descriptors, logging).
What the command lines do to their own process before TensorFlow's import (oneDNN kernels,
native log lines off the terminal) is `train.console`, which they call first.
"""
