"""Pictures for the folder tests: noisy stripes or checks in a random colour, learnable but not
trivial, at any size."""

import numpy as np

CLASSES = ("checks", "horizontal", "vertical")


def photo(kind, rng, h, w, noise=40):
    """uint8 RGB (h, w, 3): `kind` one of CLASSES, Gaussian noise of std `noise`."""
    y, x = np.mgrid[:h, :w]
    period = rng.integers(4, 9)
    phase = rng.integers(0, period)
    pattern = {"horizontal": (y + phase) // (period // 2) % 2,
               "vertical": (x + phase) // (period // 2) % 2,
               "checks": ((y + phase) // period + (x + phase) // period) % 2}[kind]
    image = pattern[..., None] * rng.integers(60, 256, 3) + rng.normal(0, noise, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)
