"""Training room: datasets, views, pipelines, recipes and the one training loop (TensorFlow).

    from train import loop, recipes
    summary = loop.train(recipes.resolve("smoke"), "runs/smoke")

Importing `train` turns on TensorFlow's oneDNN kernels on x86-64 unless the environment says
otherwise (`TF_ENABLE_ONEDNN_OPTS`), and must then come before TensorFlow's own import to take
effect. TensorFlow enables them by default only on CPUs with AVX512-VNNI, AVX512-BF16 or AMX;
on AVX2-only CPUs (AMD EPYC Zen 3, many laptops) it runs Eigen's kernels, which train a CIFAR
ResNet-20 at about half the speed (measured here with oneDNN on and off: 160-200 vs 420-460
images/s on AVX-512; 330 images/s with oneDNN limited to AVX2), and sum in another order.
"""

import os as _os
import platform as _platform

if _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


class native_stderr_quiet:
    """Keeps native (C++) writes to stderr off the terminal inside the block when absl's
    verbosity is below INFO (the command lines' default): TensorFlow's start-up notices and the
    TFLite converter's progress lines ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21
    (tensorflow/tensorflow#100442). Python exceptions still carry their messages."""

    def __init__(self, always=False):
        self.always = always

    def __enter__(self):
        import sys

        from absl import logging

        self._saved = None
        if not self.always and logging.get_verbosity() >= logging.INFO:
            return self
        sys.stderr.flush()
        self._saved = _os.dup(2)
        devnull = _os.open(_os.devnull, _os.O_WRONLY)
        _os.dup2(devnull, 2)
        _os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            _os.dup2(self._saved, 2)
            _os.close(self._saved)


def quiet_native_logs():
    """For the command lines' quiet default: native (C++) writes to stderr go to /dev/null for
    the rest of the process, Python's (warnings, errors, absl WARNING logs, tracebacks) still
    reach the terminal. TensorFlow 2.21, LiteRT and MediaPipe write INFO lines natively that
    TF_CPP_MIN_LOG_LEVEL cannot hide (tensorflow/tensorflow#100442). Idempotent."""
    import io
    import sys

    from absl import logging

    if getattr(sys.stderr, "_keras_resnet_quiet", False):
        return
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    terminal = _os.dup(2)
    devnull = _os.open(_os.devnull, _os.O_WRONLY)
    _os.dup2(devnull, 2)
    _os.close(devnull)
    stream = io.TextIOWrapper(_os.fdopen(terminal, "wb", buffering=0), write_through=True,
                              encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace")
    setattr(stream, "_keras_resnet_quiet", True)
    sys.stderr = stream
    handler = logging.get_absl_handler().python_handler
    handler.stream = stream


def import_tensorflow_quietly():
    """Imports TensorFlow with its native start-up lines (oneDNN notice, CUDA probing) off the
    terminal (see `native_stderr_quiet`)."""
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_quiet(always=True):
        import tensorflow
    return tensorflow
