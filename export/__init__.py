"""Export room: from a trained model to files a server or a phone runs, verified.

    import export
    report = export.export("runs/r20/", "out/", export.ExportSpec(formats=("float32", "int8")))

`export.export` (in `export.exporter`) takes a model, a `.keras` file or a run directory of
`train.loop` and an `ExportSpec` (`export.spec`), writes every format into a temporary
directory, verifies it (`export.verify`: LiteRT, TFLite Metadata, MediaPipe, SavedModel) and
only then moves the files that passed into place.

The names below are loaded on first use, so `python -m export` can quiet TensorFlow's start-up
before TensorFlow is imported.
"""

import importlib

_NAMES = {
    "export": "export.exporter", "ExportData": "export.inputs", "load_data": "export.inputs",
    "load_source": "export.inputs", "DEFAULT_FORMATS": "export.spec", "FILES": "export.spec",
    "FORMATS": "export.spec", "ExportSpec": "export.spec", "TFLiteModel": "export.verify",
    "VerificationError": "export.verify", "format_table": "export.verify",
}
_MODULES = ("formats", "spec", "verify")

__all__ = sorted(_NAMES) + list(_MODULES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"export.{name}")
    raise AttributeError(f"module 'export' has no attribute {name!r}")
