try:
    import triton  # noqa: F401  must load before TensorFlow, or importing it later segfaults (TF 2.21)
except ImportError:
    pass
