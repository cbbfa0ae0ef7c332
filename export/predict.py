"""`python -m export.predict MODEL IMAGE...`: classify image files with an exported model.

MODEL is a `.tflite` file or a SavedModel directory written by `python -m export`; its
metadata.json (beside the file, or in the SavedModel's assets/) gives the input size, the
resizing and the class names, as an app on a device would use them.
"""

import os
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

from export import formats
from export.verify import TFLiteModel

flags.DEFINE_integer("top_k", 3, "Classes to print per image.")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")


def read_image(path, channels):
    """uint8 (h, w, channels) from a PNG, JPEG, BMP or GIF file."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file: expected an image (PNG, JPEG, BMP, GIF).")
    try:
        return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                  expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise ValueError(f"{path} is not an image TensorFlow can decode: {e.message}") from None


class Classifier:
    """An exported model with its metadata: `__call__(uint8 image) -> probabilities`."""

    def __init__(self, model_path, num_threads=2):
        self.metadata = formats.read_metadata(model_path)
        self.class_names = self.metadata["class_names"]
        self.spec = self.metadata["input"]
        if os.path.isdir(model_path):
            self._serve = tf.saved_model.load(model_path).signatures["serving_default"]
            self._tflite = None
        else:
            self._tflite = TFLiteModel(model_path, num_threads=num_threads)

    def __call__(self, image):
        batch = tf.constant(np.asarray(image, np.uint8)[None])
        if self._tflite is None:
            return self._serve(images=batch)["probabilities"].numpy()[0]
        pixels = formats.serving_preprocess(batch, self.spec).numpy()
        return self._tflite.predict(pixels)[0]

    def top_k(self, image, k=3):
        """[(class name, probability), ...], best first."""
        probabilities = self(image)
        best = np.argsort(probabilities)[::-1][:k]
        return [(self.class_names[i], float(probabilities[i])) for i in best]


def main(argv):
    if len(argv) < 3:
        raise app.UsageError("usage: python -m export.predict MODEL IMAGE [IMAGE ...]")
    model_path, images = argv[1], argv[2:]
    try:
        classifier = Classifier(model_path, flags.FLAGS.num_threads)
        for path in images:
            image = read_image(path, classifier.spec["channels"])
            ranked = classifier.top_k(image, flags.FLAGS.top_k)
            print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
