"""Converts a PyTorch ResNet checkpoint (timm/torchvision) into a Keras `.weights.h5` + JSON.

    python -m keras_resnet.convert --model resnet50 --weights tv2_in1k --out DIR
    python -m keras_resnet.convert --model resnet50 --weights /path/model.safetensors --out DIR

writes DIR/<model>_<tag>.weights.h5 (Keras 3 format, for a v1.5 model) and
DIR/<model>_<tag>.json (source, URL, license, preprocessing, top-1, sha256 of the source file),
so the result ships and loads offline:
`keras_resnet.ResNet50(weights=".../resnet50_tv2_in1k.weights.h5", variant="v1.5")`.
A tag is fetched into the Keras cache first (offline: put the file where the error says); a
local `.pth` needs torch.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
from absl import app, flags

from keras_resnet import variants
from keras_resnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_resnet.weights import assign_weights, read_h5, registry, torch_checkpoints

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _source(model_name, weights):
    """(path of the source file, its registry row or None) for a tag or a local path."""
    if os.path.isfile(weights):
        return weights, None
    if model_name not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}; received {model_name!r}.")
    row = registry.get(model_name, weights)
    if row.layout not in ("safetensors", "torch_pth"):
        raise ValueError(f"{model_name} weights {weights!r} are already a Keras file ({row.url}); "
                         "nothing to convert.")
    return registry.fetch(row), row


def _sidecar(model_name, tag, row, src, sha256, classes):
    if row is None:
        return {
            "model": model_name, "tag": tag, "source": "local file", "url": None,
            "license": "unknown: that of the file's origin", "top1": None, "classes": classes,
            "variant": "v1.5", "source_file": os.path.abspath(src), "source_sha256": sha256,
            # torchvision/timm defaults; a file trained otherwise needs its own values.
            "preprocessing": {"mode": "torch", "mean": list(IMAGENET_MEAN),
                              "std": list(IMAGENET_STD), "input_size": 224,
                              "crop_fraction": 0.875, "assumed": True},
        }
    return {
        "model": model_name, "tag": tag, "source": row.source, "url": row.url,
        "license": row.license, "top1": row.top1, "classes": row.classes, "variant": row.variant,
        "source_file": os.path.basename(src), "source_sha256": sha256,
        "preprocessing": {"mode": row.preprocessing, "mean": list(row.mean), "std": list(row.std),
                          "input_size": row.input_size, "crop_fraction": row.crop_fraction},
    }


def convert(model_name, weights, out_dir, tag=None):
    """Converts `weights` (a registry tag or a `.safetensors`/`.pth` path) for `model_name`.

    Builds the v1.5 model (with the classifier when the file has one, sized to it), maps and
    verifies every tensor, saves, re-reads the saved file and checks it equals the model's weights,
    and only then moves both files into `out_dir`. Returns (weights path, sidecar path).
    """
    src, row = _source(model_name, weights)
    tag = tag or (row.tag if row else re.sub(r"[^A-Za-z0-9_.-]", "_",
                                              os.path.basename(src).split(".")[0]))
    state = torch_checkpoints.read_state_dict(src)
    fc = state.get("fc.weight")
    classes = int(np.shape(fc)[0]) if fc is not None else None
    model = variants.create(model_name, weights=None, variant="v1.5", include_top=fc is not None,
                            classes=classes or 1000)
    assign_weights(model, torch_checkpoints.torch_state_dict_to_keras(state, model))

    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"{model_name}_{tag}")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        h5 = os.path.join(tmp, "w.weights.h5")
        model.save_weights(h5)
        saved = read_h5(h5)
        for layer in model.layers:
            if layer.weights and not all(np.array_equal(a, b) for a, b in
                                         zip(layer.get_weights(), saved.get(layer.name, []))):
                raise RuntimeError(f"Saved weights of {layer.name} differ from the model's.")
        meta = _sidecar(model_name, tag, row, src, registry.file_digest(src, "sha256"), classes)
        meta.update(keras_file=os.path.basename(base) + ".weights.h5",
                    keras_version=keras.__version__)
        with open(os.path.join(tmp, "w.json"), "w") as f:
            json.dump(meta, f, indent=2)
        shutil.move(h5, base + ".weights.h5")
        shutil.move(os.path.join(tmp, "w.json"), base + ".json")
    return base + ".weights.h5", base + ".json"


FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a command, so importing this module adds no global flags."""
    flags.DEFINE_enum("model", None, MODELS, "Architecture the checkpoint is for.")
    flags.DEFINE_string("weights", None, "A registry tag (e.g. tv2_in1k, a1_in1k) or a path to a "
                        ".safetensors / .pth file.")
    flags.DEFINE_string("out", None, "Output directory.")
    flags.DEFINE_string("tag", None, "Tag in the output file names (default: the registry tag or "
                        "the source file's stem).")
    flags.mark_flags_as_required(["model", "weights", "out"])


def main(argv):
    del argv
    start = time.perf_counter()
    try:
        h5, meta = convert(FLAGS.model, FLAGS.weights, FLAGS.out, FLAGS.tag)
    except (ValueError, OSError, ImportError) as e:  # already say what to do: no traceback
        sys.exit(f"keras_resnet.convert: {e}")
    print(f"Wrote {h5} and {meta} in {time.perf_counter() - start:.1f} s.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
