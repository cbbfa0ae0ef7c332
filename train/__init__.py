"""Training room: data pipelines, recipes and the training loop (TensorFlow-only code)."""
