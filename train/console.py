"""What a command line does to its own process, first thing, before TensorFlow is imported.

    from train import console
    console.start_command_line(verbosity=None, native_log="runs/r20/native.log")

`python -m train`, `python -m export` and `python -m train.experiments` call
`start_command_line` first in their `main`. Importing this module (or `train`, or `export`)
changes nothing in the process: a library user's environment and file descriptors stay as they
are unless the user calls these functions.

- `prefer_onednn`: TensorFlow's oneDNN kernels on x86-64 CPUs.
- `quiet_native_logs`: native (C++) stderr lines go to a log file, Python's to the terminal.
- `native_stderr_quiet`: a block whose native stderr lines go to that log (or /dev/null).
- `import_tensorflow_quietly`: TensorFlow's import with its start-up lines off the terminal.
"""

import atexit
import dataclasses
import io
import os
import platform
import shutil
import sys
import tempfile
import time

from absl import logging


def prefer_onednn() -> None:
    """Sets TF_ENABLE_ONEDNN_OPTS=1 on x86-64 unless the environment sets it. TensorFlow reads
    it once, at its import: this must run before TensorFlow is imported, and does nothing
    after. TensorFlow turns oneDNN on by itself only on CPUs with AVX512-VNNI, AVX512-BF16 or
    AMX; elsewhere (AVX2-only CPUs) it runs Eigen's kernels, which are slower for these
    models and sum in another order (benchmarks/bench_training.py measures the step)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    if "tensorflow" in sys.modules:
        if "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
            logging.warning("prefer_onednn() after TensorFlow's import has no effect: call it "
                            "before importing tensorflow, keras or train's TensorFlow modules.")
        return
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def start_command_line(verbosity: int | None, native_log: str | None = None) -> None:
    """A command line's process set-up, first thing in its `main` (before TensorFlow's import).

    verbosity: absl's --verbosity when the user gave it, else None (the quiet default: absl
        logs from WARNING up, native lines go to `native_log`, or to a temporary file until a
        later `quiet_native_logs(path)` names one; see `quiet_native_logs`).
    """
    prefer_onednn()
    if verbosity is not None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbosity >= 0 else "2")
        return
    logging.set_verbosity(logging.WARNING)
    quiet_native_logs(native_log)


@dataclasses.dataclass
class _NativeLog:
    """Where native stderr lines go: one per process, as fd 2 is."""

    path: str | None = None
    temporary: bool = False
    fd: int | None = None

    def open_target(self) -> int:
        """A new write descriptor: the log when there is one, else /dev/null."""
        if self.fd is not None:
            return os.dup(self.fd)
        return os.open(os.devnull, os.O_WRONLY)

    def switch(self, path: str, temporary: bool) -> None:
        """Opens `path` (appending, with a header line), moves an earlier log's lines into it,
        and keeps its descriptor."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if not temporary:
            os.write(fd, f"# keras-resnet native log: pid {os.getpid()}, "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        if self.path and os.path.exists(self.path):
            with open(self.path, "rb") as src, os.fdopen(os.dup(fd), "ab") as dst:
                shutil.copyfileobj(src, dst)
            if self.temporary:
                os.remove(self.path)
        if self.fd is not None:
            os.close(self.fd)
        self.path, self.temporary, self.fd = path, temporary, fd


_NATIVE_LOG = _NativeLog()


class native_stderr_quiet:
    """Keeps native (C++) writes to stderr off the terminal inside the block when absl's
    verbosity is below INFO (the command lines' default), or `always`: TensorFlow's start-up
    notices and the TFLite converter's progress lines ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21
    (tensorflow/tensorflow#100442). They go to the native log when `quiet_native_logs` set one,
    else to /dev/null. Python exceptions still carry their messages."""

    def __init__(self, always=False):
        self.always = always

    def __enter__(self):
        self._saved = None
        if not self.always and logging.get_verbosity() >= logging.INFO:
            return self
        sys.stderr.flush()
        self._saved = os.dup(2)
        target = _NATIVE_LOG.open_target()
        os.dup2(target, 2)
        os.close(target)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


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
    quiet = getattr(sys.stderr, "_keras_resnet_quiet", False)
    current = _NATIVE_LOG.path
    if quiet and (path is None or (current and os.path.abspath(path) == current)):
        return
    if path is None:
        fd, path = tempfile.mkstemp(prefix="keras_resnet_native_", suffix=".log")
        os.close(fd)
        atexit.register(lambda p=path: os.path.exists(p) and os.remove(p))
        _NATIVE_LOG.switch(path, temporary=True)
    else:
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _NATIVE_LOG.switch(path, temporary=False)
    sys.stderr.flush()
    if quiet:
        os.dup2(_NATIVE_LOG.fd, 2)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    terminal = os.dup(2)
    os.dup2(_NATIVE_LOG.fd, 2)
    stream = io.TextIOWrapper(os.fdopen(terminal, "wb", buffering=0), write_through=True,
                              encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace")
    setattr(stream, "_keras_resnet_quiet", True)
    sys.stderr = stream
    logging.get_absl_handler().python_handler.stream = stream


def import_tensorflow_quietly():
    """Imports TensorFlow with its native start-up lines (oneDNN notice, CUDA probing) off the
    terminal (see `native_stderr_quiet`); sets TF_CPP_MIN_LOG_LEVEL=3 unless set."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_quiet(always=True):
        import tensorflow
    return tensorflow
