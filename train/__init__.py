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
    (tensorflow/tensorflow#100442). They go to the native log when `quiet_native_logs` set one,
    else to /dev/null. Python exceptions still carry their messages."""

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
        target = _open_native_target()
        _os.dup2(target, 2)
        _os.close(target)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            _os.dup2(self._saved, 2)
            _os.close(self._saved)


_NATIVE_LOG = {"path": None, "temporary": False, "fd": None}


def _open_native_target():
    """A new write descriptor for native stderr lines: the native log when one is set, else
    /dev/null."""
    if _NATIVE_LOG["fd"] is not None:
        return _os.dup(_NATIVE_LOG["fd"])
    return _os.open(_os.devnull, _os.O_WRONLY)


def _switch_native_log(path, temporary):
    """Opens `path` (appending, with a header line), moves an earlier log's lines into it, and
    keeps its descriptor."""
    import shutil
    import time

    old, old_fd, was_temporary = (_NATIVE_LOG[k] for k in ("path", "fd", "temporary"))
    fd = _os.open(path, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644)
    if not temporary:
        _os.write(fd, f"# keras-resnet native log: pid {_os.getpid()}, "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    if old and _os.path.exists(old):
        with open(old, "rb") as src, _os.fdopen(_os.dup(fd), "ab") as dst:
            shutil.copyfileobj(src, dst)
        if was_temporary:
            _os.remove(old)
    if old_fd is not None:
        _os.close(old_fd)
    _NATIVE_LOG.update(path=path, temporary=temporary, fd=fd)


def quiet_native_logs(path=None):
    """For the command lines' quiet default: native (C++) writes to stderr go to a log file for
    the rest of the process, Python's (warnings, errors, absl WARNING logs, tracebacks) still
    reach the terminal. TensorFlow 2.21, LiteRT and MediaPipe write INFO lines natively that
    TF_CPP_MIN_LOG_LEVEL cannot hide (tensorflow/tensorflow#100442), but a fatal native error
    (a CHECK failure before an abort) is written the same way, so it is kept: in `path`
    (the CLIs pass RUN_DIR/native.log or OUT/native.log), else in a temporary file that a
    normal exit removes and a crash leaves behind. A later call with a path moves the log
    there (with what it holds). TensorFlow's own INFO lines are still filtered
    (TF_CPP_MIN_LOG_LEVEL=1 unless set); warnings and errors land in the log."""
    import atexit
    import io
    import sys
    import tempfile

    from absl import logging

    quiet = getattr(sys.stderr, "_keras_resnet_quiet", False)
    current = _NATIVE_LOG["path"]
    if quiet and (path is None or (current and _os.path.abspath(path) == current)):
        return
    if path is None:
        fd, path = tempfile.mkstemp(prefix="keras_resnet_native_", suffix=".log")
        _os.close(fd)
        atexit.register(lambda p=path: _os.path.exists(p) and _os.remove(p))
        _switch_native_log(path, temporary=True)
    else:
        path = _os.path.abspath(_os.path.expanduser(path))
        _os.makedirs(_os.path.dirname(path), exist_ok=True)
        _switch_native_log(path, temporary=False)
    sys.stderr.flush()
    if quiet:
        _os.dup2(_NATIVE_LOG["fd"], 2)
        return
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    terminal = _os.dup(2)
    _os.dup2(_NATIVE_LOG["fd"], 2)
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
