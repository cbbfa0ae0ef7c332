"""Importing the packages leaves the process alone; `train.console` is what the command lines
do to their own process (oneDNN default, native stderr lines into a log). Each case runs in a
fresh Python: environment variables, fd 2 and TensorFlow's import are process-wide."""

import os

IMPORTS = r"""
import os, sys
environ, stderr, fd2 = dict(os.environ), sys.stderr, os.fstat(2)

import export
import train

assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "a package imported TF"
assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())
assert sys.stderr is stderr and os.fstat(2).st_ino == fd2.st_ino

# The rooms' TensorFlow modules: TensorFlow sets variables of its own (TF_CPP_MIN_LOG_LEVEL
# among them, when unset), ours set none.
import tensorflow

environ = dict(os.environ)
import export.exporter
import train.loop

for key in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL"):
    assert os.environ.get(key) == environ.get(key), (key, os.environ.get(key))
assert sys.stderr is stderr and os.fstat(2).st_ino == fd2.st_ino

# Too late for oneDNN: TensorFlow has read its settings. A warning, and nothing set.
from train import console

console.prefer_onednn()
assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == environ.get("TF_ENABLE_ONEDNN_OPTS")

# export's names are loaded on first use, and named for editors and help().
assert set(export.__all__) <= set(dir(export))
missing = [name for name in export.__all__ if not hasattr(export, name)]
assert not missing, missing
assert export.export.__module__ == "export.exporter"
print("ok")
"""

QUIET = r"""
import os, sys
from train import console

log = sys.argv[1]
console.start_command_line(None, log)
os.write(2, b"a native line\n")
print("a Python line", file=sys.stderr)
from absl import logging
logging.warning("an absl warning")
logging.info("an absl info")
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""

VERBOSE = r"""
import os, sys
from train import console

console.start_command_line(0, sys.argv[1])
os.write(2, b"a native line\n")
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""

X86 = os.uname().machine.lower() in ("x86_64", "amd64")


def _env(helpers, **extra):
    env = helpers.subprocess_env(**extra)
    for key in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL"):
        if key not in extra:
            env.pop(key, None)
    return env


def test_importing_train_and_export_changes_nothing(helpers):
    proc = helpers.run_python(IMPORTS, env=_env(helpers), timeout=300)
    assert proc.stdout.split()[-1] == "ok"
    if X86:
        assert "prefer_onednn() after TensorFlow's import has no effect" in proc.stderr


def test_command_line_start_quiet_sends_native_lines_to_the_log(helpers, tmp_path):
    log = tmp_path / "run" / "native.log"
    proc = helpers.run_python(QUIET, log, env=_env(helpers))
    assert "a Python line" in proc.stderr and "an absl warning" in proc.stderr
    assert "a native line" not in proc.stderr and "an absl info" not in proc.stderr
    text = log.read_text()
    assert text.startswith("# keras-resnet native log: pid ") and "a native line" in text
    assert proc.stdout.split() == ["1" if X86 else "None", "1"]


def test_command_line_start_verbose_keeps_stderr_and_a_users_choice(helpers, tmp_path):
    proc = helpers.run_python(VERBOSE, tmp_path / "native.log",
                              env=_env(helpers, TF_ENABLE_ONEDNN_OPTS="0"))
    assert "a native line" in proc.stderr
    assert not (tmp_path / "native.log").exists()
    assert proc.stdout.split() == ["0", "0"]  # the user's oneDNN choice; INFO logs back on
