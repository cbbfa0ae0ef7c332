"""Export room: from a trained model to files a server or a phone runs, verified.

    import export
    report = export.export("runs/r20/", "out/", export.ExportSpec(formats=("float32", "int8")))

`export.export` (in `export.exporter`) takes a model, a `.keras` file or a run directory of
`train.loop` and an `ExportSpec` (`export.spec`), writes every format into a temporary
directory, verifies it (`export.verify`: LiteRT, TFLite Metadata, MediaPipe, SavedModel, ONNX
Runtime) and only then moves the files that passed into place. `export.evaluate` judges any
such file on any dataset later, from the file alone.

Importing `export` does not import TensorFlow: `python -m export` sets up its process first
(`train.console`), and TensorFlow reads its settings at its import. So the names from modules
that use TensorFlow are loaded on first use; `__all__`, `dir(export)`, `help(export)` and the
`TYPE_CHECKING` imports below (what editors and type checkers read) name them all.
"""

import importlib
from typing import TYPE_CHECKING

from export import spec
from export.spec import DEFAULT_FORMATS, FILES, FORMATS, ExportSpec

if TYPE_CHECKING:
    from export import evaluate, formats, verify
    from export.exporter import export
    from export.inputs import ExportData, RunSummary, evaluation_view, load_data, load_source
    from export.verify import TFLiteModel, VerificationError, format_table

_ON_FIRST_USE = {
    "export": "export.exporter", "ExportData": "export.inputs", "load_data": "export.inputs",
    "load_source": "export.inputs", "RunSummary": "export.inputs",
    "evaluation_view": "export.inputs", "TFLiteModel": "export.verify",
    "VerificationError": "export.verify", "format_table": "export.verify",
}
_MODULES_ON_FIRST_USE = ("evaluate", "formats", "verify")
"""Submodules: `export.evaluate` is the package (`export.evaluate.evaluate(...)` judges files)."""

__all__ = sorted(["DEFAULT_FORMATS", "FILES", "FORMATS", "ExportSpec", "spec",
                  *_ON_FIRST_USE, *_MODULES_ON_FIRST_USE])


def __getattr__(name):
    if name in _ON_FIRST_USE:
        value = getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    elif name in _MODULES_ON_FIRST_USE:
        value = importlib.import_module(f"export.{name}")
    else:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
