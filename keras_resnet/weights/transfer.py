"""Transfer learning, the model library's side: which pretrained weights, and loading them into
a model with other classes or other input channels.

    from keras_resnet.weights import transfer

    pre = transfer.resolve_pretrained("resnet18", "imagenet")      # a registry tag, or a file
    norm = pre.normalization_for(channels=3)                        # ValueError if unknown
    x = keras_resnet.ImageNormalization(*norm, name="mean_subtraction")(inputs)
    model = keras_resnet.create("resnet18", weights=None, variant=pre.variant,
                                input_tensor=x, classes=5)
    report = transfer.load_pretrained(model, pre)   # head left at init: report.layers_left_at_init

Loading is by layer name (the keras.applications scheme). A classifier whose class count
differs from the model's is left at initialization; the first conv is adapted to the model's
input channels (timm's rule, `keras_resnet.weights.input_conv`); every other layer of the
architecture must match, or nothing is loaded.
"""

import dataclasses
import os
import re

import keras
import numpy as np
from absl import logging

from keras_resnet.layers import ImageNormalization
from keras_resnet.preprocessing import MODES, Normalization
from keras_resnet.weights import loader, registry, sources
from keras_resnet.weights.input_conv import FIRST_CONV

NORMALIZATION_MODES = tuple(sorted(MODES)) + ("imagenet",)
# Layers of the keras_resnet architectures (keras.applications' names); a model's other layers
# (a 'mean_subtraction' normalization, a head of the user's) are not expected in a weights file.
ARCHITECTURE_LAYER = re.compile(r"(conv\d+_.*|pool\d+_.*|post_(bn|relu)|avg_pool|max_pool|"
                                r"predictions|input_layer)")


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """A resolved weight set: where its file is, what it is, how its inputs were normalized.

    Attributes:
        model: the canonical architecture name (`keras_resnet.resolve(name).name`).
        tag_or_path: what was asked for: a registry tag ('imagenet', 'tv2_in1k', ...) or a path.
        source: 'registry' (a named set, fetched into the Keras cache) or 'file'.
        path: the local file that is loaded.
        sha256: hex SHA-256 of that file.
        license: the registry row's license (also for a converted or hand-downloaded copy of a
            registry file), else None.
        normalization: per-channel (mean, std) in pixel units 0..255, RGB order, of the input
            the weights were trained on; None when unknown (see `normalization_for`).
        normalization_source: where `normalization` came from, in words, or None.
        input_size: the size the weights were trained or evaluated at (224, 32 ...), or None.
        crop_fraction: the evaluation centre crop of the weight set (0.875, 0.95 ...), or None.
        classes: the class count of the file's classifier; None if it has none.
        input_channels: the channels the file's first conv takes (3 for RGB), or None.
        variant: the graph layout the file needs: pass it as `create(..., variant=...)`.
        bgr_input: the file's first conv was trained on BGR input (Caffe); `load_pretrained`
            reverses its input channels, so the model takes RGB like every other.
    """

    model: str
    tag_or_path: str
    source: str
    path: str
    sha256: str
    license: str | None
    normalization: Normalization | None
    normalization_source: str | None
    input_size: int | None
    crop_fraction: float | None
    classes: int | None
    input_channels: int | None
    variant: str
    bgr_input: bool = False

    def normalization_for(self, channels: int = 3) -> Normalization:
        """(mean, std) for a model taking `channels` input channels (`Normalization.for_channels`:
        1 channel averages, more repeat R, G, B, R ...).

        Raises ValueError naming the `normalization=` option when the file does not say how
        its inputs were normalized.
        """
        if self.normalization is None:
            raise ValueError(
                f"The weights {self.tag_or_path!r} do not say how their input images were "
                "normalized (no registry row, no normalization layer in the model, no sidecar "
                "JSON from keras_resnet.convert), and features fed another normalization are "
                "silently worse. Pass normalization= to resolve_pretrained: one of "
                f"{list(NORMALIZATION_MODES)} or (mean, std) per channel in pixel units 0..255."
            )
        return self.normalization.for_channels(channels)

    def record(self) -> dict:
        """The JSON-ready fields, for a run's recipe.json or summary.json."""
        out = dataclasses.asdict(self)
        if self.normalization is not None:
            out["normalization"] = {"mean": list(self.normalization.mean),
                                    "std": list(self.normalization.std)}
        return out


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What `load_pretrained` did, by layer name (tuples in the model's layer order).

    Attributes:
        layers_loaded: layers whose weights now come from the file.
        layers_left_at_init: weighted layers the file did not set: a classifier of another class
            count (or a file without one), layers outside the ResNet architecture.
        adapted: layers loaded in a changed form: the first conv fitted to the model's input
            channels and/or from BGR to RGB input.
        extra_layers: weightless layers outside the file's architecture (e.g. the
            'mean_subtraction' normalization): nothing to load, listed for the reader.
    """

    layers_loaded: tuple
    layers_left_at_init: tuple
    adapted: tuple
    extra_layers: tuple


def _explicit_normalization(option):
    """(Normalization, reverse_channels) of a `normalization=` option."""
    if isinstance(option, str):
        if option not in NORMALIZATION_MODES:
            raise ValueError(f"Unknown normalization {option!r}: expected one of "
                             f"{list(NORMALIZATION_MODES)} or (mean, std) in pixel units 0..255.")
        return Normalization.of_mode(option)
    try:
        mean, std = option
        mean = tuple(float(v) for v in np.atleast_1d(np.asarray(mean, np.float64)))
        std = tuple(float(v) for v in np.atleast_1d(np.asarray(std, np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"`normalization` must be a mode name ({list(NORMALIZATION_MODES)}) or "
                         f"(mean, std) per channel in pixel units 0..255; received "
                         f"{option!r}.") from None
    if not all(s > 0 for s in std):
        raise ValueError(f"`normalization` std must be > 0; received {option!r}.")
    return Normalization(mean, std), False


def _with_option(known, option, tag_or_path):
    """(normalization, reverse, source words) after the `normalization=` option."""
    norm, rev, words = known
    if option is None:
        return norm, rev, words
    given, given_rev = _explicit_normalization(option)
    if norm is not None:
        channels = max(len(norm.mean), len(given.mean))
        same = given_rev == rev and all(np.allclose(a, b, rtol=1e-4) for a, b in zip(
            norm.for_channels(channels), given.for_channels(channels)))
        if not same:
            raise ValueError(
                f"normalization={option!r} contradicts the weights {tag_or_path!r}, which were "
                f"trained with mean {norm.mean}, std {norm.std} (RGB, pixel units; "
                f"{words}{', BGR input' if rev else ''}). Drop the normalization option.")
        return norm, rev, words
    return given, given_rev, f"normalization={option!r}"


def _from_registry(arch, tag):
    row = registry.get(arch, tag)
    path = registry.fetch(row)
    norm, rev = Normalization.of_mode(row.preprocessing, row.mean, row.std)
    meta = dict(license=row.license, input_size=row.input_size, crop_fraction=row.crop_fraction,
                classes=row.classes, input_channels=3, variant=row.variant)
    return path, (norm, rev, f"registry {arch}/{row.tag}: {row.preprocessing!r} mode"), meta


def _from_file(arch, path):
    classes, channels, variant = sources.file_facts(path)
    meta = dict(license=None, input_size=None, crop_fraction=None, classes=classes,
                input_channels=channels, variant=variant)
    if path.endswith(".keras"):
        norm, rev, size = sources.keras_model_preprocessing(path, channels or 3)
        meta["input_size"] = size
        return (norm, rev, "the model's ImageNormalization layer" if norm else None), meta
    row = sources.registry_row_of_file(arch, path)
    if row is not None:
        norm, rev = Normalization.of_mode(row.preprocessing, row.mean, row.std)
        meta.update(license=row.license, input_size=row.input_size,
                    crop_fraction=row.crop_fraction)
        return (norm, rev, f"registry {arch}/{row.tag} (the file's md5)"), meta
    side = sources.sidecar(path)
    if side is None:
        return (None, False, None), meta
    norm, rev, size, crop = sources.sidecar_preprocessing(side)
    meta.update(input_size=size, crop_fraction=crop,
                license=side.get("license") if side.get("source") != "local file" else None)
    return (norm, rev, f"sidecar {sources.sidecar_path(path)}" if norm else None), meta


def resolve_pretrained(model_name: str, weights, *, normalization=None) -> PretrainedWeights:
    """Finds and describes the weight set `weights` for the architecture `model_name`.

    Args:
        model_name: any name `keras_resnet.resolve` accepts ('resnet18', 'resnet20' ...).
        weights: a registry tag of that model ('imagenet', 'a1_in1k', 'tv2_in1k' ...: see
            `keras_resnet.weights.tags(model)`), or a path to a `.weights.h5`, a keras.applications
            `.h5`, a `.safetensors` or `.pth` checkpoint, or a training run's `model.keras`.
        normalization: how the inputs were normalized, for a file that does not say: a mode
            ('imagenet' = 'torch', 'caffe', 'tf') or (mean, std) per channel in pixel units
            0..255. Where the weights do say, it must agree (else ValueError).
    Returns:
        A `PretrainedWeights`. Its normalization comes from the registry row's preprocessing
        mode, a `.keras` model's own `ImageNormalization` layer (a per-pixel mean image reduced
        to its per-channel average), the JSON sidecar `keras_resnet.convert` writes, a
        keras.applications file recognized by its md5, or `normalization`; else None.
    Raises:
        ValueError: unknown model, tag or file, or a contradicting `normalization`.
        OSError: a named set not in the Keras cache that cannot be downloaded; raised at once,
            naming the URL and the path where to put the file.
    """
    from keras_resnet.variants import resolve

    arch = resolve(model_name).name
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be a registry tag or a file path; received {weights!r}.")
    text = os.fspath(weights)
    if os.path.isfile(text):
        source, path = "file", os.path.abspath(text)
        known, meta = _from_file(arch, path)
    elif text in registry.tags(arch) or not re.search(r"[/\\]|\.\w+$", text):
        source = "registry"
        path, known, meta = _from_registry(arch, text)
    else:
        raise ValueError(f"No weights file at {text!r} (and it is not a weight set of {arch}: "
                         f"{registry.tags(arch) or 'none'}). Pass an existing file or a tag.")
    norm, rev, words = _with_option(known, normalization, text)
    return PretrainedWeights(
        model=arch, tag_or_path=text, source=source, path=path,
        sha256=registry.file_digest(path, "sha256"), normalization=norm,
        normalization_source=words, bgr_input=rev, **meta)


def _model_head(model):
    names = {layer.name: layer for layer in model.layers}
    head = names.get("predictions")
    return head if head is not None and head.weights else None


def _check_normalization(model, pretrained):
    """Warns when an ImageNormalization layer of the model disagrees with the weights'."""
    if pretrained.normalization is None:
        return
    channels = loader.input_channels(model) or 3
    want = pretrained.normalization_for(channels)
    for layer in model.layers:
        if isinstance(layer, ImageNormalization):
            got = [sources.per_channel(v, channels) for v in (layer.mean, layer.std)]
            if layer.reverse_channels or not all(np.allclose(a, b, rtol=1e-3)
                                                 for a, b in zip(got, want)):
                logging.warning(
                    "Layer %s normalizes with mean %s, std %s%s, but the weights %s were trained "
                    "with mean %s, std %s (RGB): features fed another normalization are worse.",
                    layer.name, got[0], got[1], " (reversed)" if layer.reverse_channels else "",
                    pretrained.tag_or_path, want.mean, want.std)


def load_pretrained(model, pretrained: PretrainedWeights, *,
                    new_head: bool = False) -> TransferReport:
    """Loads `pretrained` into `model` by layer name, for transfer learning.

    - The classifier ('predictions') is left at initialization when the file's class count
      differs from the model's, the file has none, or `new_head` (same count, other classes).
    - The first conv ('conv1_conv') is adapted when the model's input channels differ from the
      file's (timm's `adapt_input_conv` rule), and turned from BGR to RGB input for Caffe sets.
    - Weighted layers outside the ResNet architecture (a head of your own) are left at
      initialization; weightless ones (a 'mean_subtraction' normalization) are listed.
    - Every other layer must match: else one ValueError names the missing, unexpected and
      mismatched layers, and nothing is loaded.

    Returns a `TransferReport`. Logs a warning if the model's `ImageNormalization` differs from
    the weights' normalization.
    """
    if not isinstance(pretrained, PretrainedWeights):
        raise ValueError("`pretrained` must come from resolve_pretrained(model_name, weights); "
                         f"received {type(pretrained).__name__}.")
    head = _model_head(model)
    skip = set()
    if head is not None and (new_head or pretrained.classes != int(head.weights[0].shape[-1])):
        skip.add(head.name)
    weighted = [layer for layer in model.layers if layer.weights]
    skip |= {layer.name for layer in weighted if not ARCHITECTURE_LAYER.fullmatch(layer.name)}
    weights = loader.read_weights(pretrained.path, model, skip=tuple(skip),
                                  reverse_input_channels=pretrained.bgr_input)
    loader.assign_weights(model, weights, skip=tuple(skip))
    channels = loader.input_channels(model)
    adapted = (FIRST_CONV,) if FIRST_CONV in weights and (
        pretrained.bgr_input or channels != pretrained.input_channels) else ()
    report = TransferReport(
        layers_loaded=tuple(layer.name for layer in weighted if layer.name not in skip),
        layers_left_at_init=tuple(layer.name for layer in weighted if layer.name in skip),
        adapted=adapted,
        extra_layers=tuple(layer.name for layer in model.layers if not layer.weights
                           and not isinstance(layer, keras.layers.InputLayer)
                           and not ARCHITECTURE_LAYER.fullmatch(layer.name)),
    )
    _check_normalization(model, pretrained)
    logging.info("Loaded %s into %s: %d layers loaded, left at init %s, adapted %s.",
                 pretrained.tag_or_path, model.name, len(report.layers_loaded),
                 list(report.layers_left_at_init), list(report.adapted))
    return report
