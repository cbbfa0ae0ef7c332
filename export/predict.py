"""`python -m export.predict MODEL IMAGE...`: classify image files with an exported model.

MODEL is a `.tflite` file or a SavedModel directory written by `python -m export`. A .tflite
needs nothing beside it: like a phone app, this reads the class names and input size from the
file's own TFLite Metadata, decodes each image upright (EXIF orientation applied, as a phone's
camera frame is), resizes it to that size and feeds it (uint8 RGB frames; a
file exported with --noframes, batched input, gets the evaluation view of the metadata.json
beside it). A
SavedModel reads its labels from assets/labels.txt and resizes inside its signature.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

from export import tflite_metadata
from export.formats import LUMA
from export.verify import TFLiteModel
from train import image_files, views

flags.DEFINE_integer("top_k", 3, "Classes to print per image.")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")


def read_image(path, channels):
    """uint8 (h, w, channels) from a PNG, JPEG, BMP, GIF, WebP or TIFF file, upright as the
    phone's camera shows it (EXIF orientation applied): `train.image_files.decode`, the reader
    of training's photo folders, so a photo is seen here as training saw it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file: expected an image (PNG, JPEG, BMP, GIF, WebP, "
                         "TIFF).")
    return image_files.decode(path, channels).numpy()


class Classifier:
    """An exported model and its labels: `__call__(uint8 image (h, w, C)) -> probabilities`."""

    def __init__(self, model_path, num_threads=2):
        self._tflite = self._serve = self.view = None
        if os.path.isdir(model_path):
            self._serve = tf.saved_model.load(model_path).signatures["serving_default"]
            with open(os.path.join(model_path, "assets", "labels.txt")) as f:
                self.class_names = f.read().splitlines()
            (spec,) = tf.nest.flatten(self._serve.structured_input_signature)
            self.channels = int(spec.shape[-1])
            return
        self._tflite = TFLiteModel(model_path, num_threads=num_threads)
        self.class_names = list(tflite_metadata.read_metadata(model_path)["labels"])
        self.channels = self._tflite.input_shape[-1]
        if self._tflite.batch_signature != 1:  # exported with --noframes: the model's input
            beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), "metadata.json")
            if not os.path.isfile(beside):
                raise ValueError(f"{model_path} takes the model's own input (exported with "
                                 "--noframes): keep the metadata.json written beside it, which "
                                 "holds its evaluation view.")
            with open(beside) as f:
                self.view = views.View.from_dict(json.load(f)["view"])

    def __call__(self, image):
        image = np.asarray(image, np.uint8)
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] == 4:  # RGBA: the alpha channel is dropped, as phone decoders do
            image = image[..., :3]
        if image.shape[-1] != self.channels:  # gray <-> RGB, as an app's image decoder does
            image = np.repeat(image, 3, -1) if self.channels == 3 else \
                np.round(image.astype(np.float32) @ np.float32(LUMA))[..., None]
            image = image.astype(np.uint8)
        batch = tf.constant(image[None])
        if self._serve is not None:
            return self._serve(images=batch)["probabilities"].numpy()[0]
        h, w = self._tflite.input_shape[:2]
        if self.view is not None:
            pixels = views.apply(batch, self.view)
        else:
            pixels = views.resize(batch, views.View(h, w, batch.shape[-1]))
        return self._tflite.predict(pixels.numpy())[0]

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
            image = read_image(path, classifier.channels)
            ranked = classifier.top_k(image, flags.FLAGS.top_k)
            print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
