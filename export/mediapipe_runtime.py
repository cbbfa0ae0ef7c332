"""Runs a .tflite as Android, iOS and web apps do: MediaPipe Tasks `vision.ImageClassifier`.

MediaPipe is optional (`pip install mediapipe==1.2.2`); `available()` says why it cannot run.

    with ImageClassifierRunner("model_float32.tflite") as runner:
        top1, names, scores = runner.classify(frames)  # uint8 RGB frames (N, H, W, 3)
        top1, names, scores = runner.classify([photo], regions=[(0.1, 0.0, 0.9, 1.0)])

MediaPipe takes the input size, normalization and labels from the file's TFLite Metadata
(`export.tflite_metadata`), resizes each frame to the input size itself, and refuses float32
inputs without NormalizationOptions, inputs of other than 3 or 4 channels, and int8 inputs.
MediaPipe 1.2.2 and TensorFlow 2.21 import into one process in either order.
"""

import os

import numpy as np

INSTALL = "pip install mediapipe==1.2.2"
# MediaPipe's C API reports a refused model as one of these (FileNotFoundError: NOT_FOUND, as
# for missing NormalizationOptions; NotImplementedError: per-channel normalization).
_REFUSALS = (ValueError, RuntimeError, OSError, NotImplementedError, IndexError)


def available():
    """None when MediaPipe Tasks imports, else a one-line reason."""
    try:
        import mediapipe  # noqa: F401
        from mediapipe.tasks.python import vision  # noqa: F401
    except ImportError as e:
        return f"mediapipe is not installed: {INSTALL} ({e})"
    except OSError as e:  # a wheel whose native library does not load here
        return f"mediapipe does not load here ({e}); reinstall it: {INSTALL}"
    return None


class ImageClassifierRunner:
    """A MediaPipe `ImageClassifier` on a .tflite file, returning every category's score."""

    def __init__(self, path):
        reason = available()
        if reason:
            raise ImportError(reason)
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ValueError(f"{self.path} does not exist: pass a .tflite file.")
        self.num_classes = _num_classes(self.path)
        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=self.path), max_results=self.num_classes)
        try:
            self._classifier = vision.ImageClassifier.create_from_options(options)
        except _REFUSALS as e:
            raise ValueError(f"MediaPipe ImageClassifier refuses {self.path}: {e}") from None

    def classify(self, images, regions=None):
        """(top-1 index (N,), top-1 category names, scores (N, classes) by category index) of
        uint8 RGB frames ((N, H, W, 3), or a list of (h, w, 3) frames of any sizes), each
        resized by MediaPipe to the model's input. regions: per frame, the (top, left, bottom,
        right) part of it to classify, in [0, 1] (MediaPipe's region of interest; whole frames
        when None)."""
        import mediapipe as mp
        from mediapipe.tasks.python.components.containers.rect import RectF
        from mediapipe.tasks.python.vision.core import image_processing_options as mp_options

        frames = list(images) if isinstance(images, (list, tuple)) else np.asarray(images)
        if any(np.ndim(f) != 3 or np.shape(f)[-1] != 3 or np.asarray(f).dtype != np.uint8
               for f in frames):
            got = [(str(np.asarray(f).dtype), np.shape(f)) for f in frames[:3]]
            raise ValueError(f"Expected uint8 RGB frames (N, H, W, 3) or a list of (H, W, 3); "
                             f"received {got}.")
        top1 = np.zeros(len(frames), np.int64)
        scores = np.zeros((len(frames), self.num_classes), np.float32)
        names = []
        for i, frame in enumerate(frames):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            options = None
            if regions is not None:
                top, left, bottom, right = (float(v) for v in regions[i])
                options = mp_options.ImageProcessingOptions(RectF(left=left, top=top, bottom=bottom,
                                                       right=right))
            categories = self._classifier.classify(image, options).classifications[0].categories
            for category in categories:
                scores[i, category.index] = category.score
            top1[i] = categories[0].index  # MediaPipe's own ranking, best first
            names.append(categories[0].category_name)
        return top1, names, scores

    def close(self):
        classifier, self._classifier = getattr(self, "_classifier", None), None
        if classifier is not None:
            classifier.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: MediaPipe may be gone)
            pass


def _num_classes(path):
    """The last dimension of the model's (first) output tensor."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        content = f.read()
    if not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise ValueError(f"{path} is not a TFLite model (no 'TFL3' identifier).")
    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    shape = graph.Tensors(graph.Outputs(0)).ShapeAsNumpy()
    return int(shape[-1]) if hasattr(shape, "__len__") and len(shape) else 1
