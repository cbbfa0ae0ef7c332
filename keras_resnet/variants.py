"""Named variants: rows of data over `build_resnet`, and one-line public functions.

ImageNet rows follow Table 1 of He et al. (2016); CIFAR rows follow sec. 4.2 (6n+2 layers,
16/32/64 filters, option A shortcuts); plain rows are the same nets with no shortcuts (sec. 4.1).
"""

import dataclasses
import functools
import inspect
import re

from keras_resnet import weights as W
from keras_resnet.builder import build_resnet
from keras_resnet.preprocessing import normalization_constants


@dataclasses.dataclass(frozen=True)
class Arch:
    """One row: the block kind, the stage spec and the stem of a named network.

    `name` is the row's canonical name (`resolve(row.name) == row`), the default model name
    and the key of its weight sets in the registry.
    """

    name: str
    block: str
    stages: tuple
    stem: str = "imagenet"
    shortcut: str | None = "B"
    layout: str = "v1"  # default graph layout
    stride_at: str = "first"
    default_size: int = 224
    weights: str | None = None  # default weights, as keras.applications


def _imagenet(name, block, blocks, **kw):
    filters = (64, 128, 256, 512)
    return Arch(name, block, tuple(zip(filters, blocks, (1, 2, 2, 2))), **kw)


def _v2(name, blocks):
    filters = (64, 128, 256, 512)
    return Arch(name, "preact_bottleneck", tuple(zip(filters, blocks, (2, 2, 2, 1))), layout="v2",
                stride_at="last", weights="imagenet")


IMAGENET_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                   50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
                   152: ("bottleneck", (3, 8, 36, 3))}
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the named ones (Table 6); any 6n+2 >= 8 resolves


def cifar_arch(depth, plain=False):
    """The CIFAR net of `depth` = 6n+2 layers (sec. 4.2): three stages of n basic blocks with
    16/32/64 filters, option-A shortcuts (none if `plain`). The one place the 6n+2 rule lives.

    Named `resnet{depth}` / `plain{depth}`; where that name is an ImageNet net (depths 50 and
    152 are also 6n+2) the CIFAR row is `resnet{depth}_cifar`.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...); "
                         f"received depth={depth!r}.")
    n = (depth - 2) // 6
    suffix = "_cifar" if depth in IMAGENET_DEPTHS else ""
    name = f"{'plain' if plain else 'resnet'}{depth}{suffix}"
    return Arch(name, "basic", ((16, n, 1), (32, n, 2), (64, n, 2)), stem="cifar",
                shortcut=None if plain else "A", layout="v1.5", default_size=32)


ARCHS = {}
for _d, (_block, _blocks) in IMAGENET_DEPTHS.items():
    _layout = "v1" if _block == "bottleneck" else "v1.5"
    ARCHS[f"resnet{_d}"] = _imagenet(f"resnet{_d}", _block, _blocks, layout=_layout,
                                     weights="imagenet")
    ARCHS[f"plain{_d}"] = _imagenet(f"plain{_d}", _block, _blocks, shortcut=None, layout=_layout)
for _d, _blocks in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))):
    ARCHS[f"resnet{_d}v2"] = _v2(f"resnet{_d}v2", _blocks)
for _d in CIFAR_DEPTHS:
    ARCHS[f"resnet{_d}"] = cifar_arch(_d)
    ARCHS[f"plain{_d}"] = cifar_arch(_d, plain=True)
del _d, _block, _blocks, _layout

_CIFAR_NAME = re.compile(r"(resnet|plain)([1-9]\d*)(_cifar)?")


def resolve(name):
    """The architecture row for `name`, case-insensitive; nothing is added to `ARCHS`.

    `name` is a key of `ARCHS` ('resnet50', 'resnet50v2', 'plain34', 'resnet110', ...), or
    'resnetN' / 'plainN' for any CIFAR depth N = 6n+2 >= 8 ('resnet8', 'plain14'), or
    'resnetN_cifar' / 'plainN_cifar' for the CIFAR net where N is also an ImageNet depth (50,
    152). `resolve(row.name)` gives the row back.
    """
    if not isinstance(name, str):
        raise ValueError(f"An architecture name must be a string such as 'resnet50'; received "
                         f"{name!r} ({type(name).__name__}).")
    key = name.strip().lower()
    if key in ARCHS:
        return ARCHS[key]
    match = _CIFAR_NAME.fullmatch(key)
    if match and (match[3] or int(match[2]) not in IMAGENET_DEPTHS):
        try:
            return cifar_arch(int(match[2]), plain=match[1] == "plain")
        except ValueError:
            pass
    raise ValueError(f"Unknown architecture {name!r}: expected one of {sorted(ARCHS)}, or "
                     "'resnetN' / 'plainN' with N = 6n+2 >= 8 for a CIFAR net (sec. 4.2: 8, 14, "
                     "20, 26, 32, ...; 'resnet50_cifar' where N is also an ImageNet depth).")


# The model arguments, written once: their names, defaults and meaning are `build_resnet`'s.
# Every public model function takes keras.applications' arguments in its positional order,
# then ours keyword-only; each gets this signature (for help(), editors and inspect) from
# `model_signature`, with its own defaults.
APPLICATIONS_ARGUMENTS = ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                          "classes", "classifier_activation", "name")
OPTIONS = ("include_preprocessing", "variant", "shortcut", "synchronized_bn", "bn_momentum",
           "zero_init_residual")
# Defaults that a row decides ("default": the row's own), and `variant`, which is ours alone.
ROW_DEFAULTS = {"weights": "default", "name": None, "shortcut": "default", "variant": None}


def model_signature(leading=(), extra=None, **defaults):
    """The `inspect.Signature` of a model function.

    `leading` names come first (positional or keyword, no default), then
    `APPLICATIONS_ARGUMENTS`, then `extra` ({name: default}) and `OPTIONS` keyword-only.
    A default is taken from `defaults`, else `ROW_DEFAULTS`, else `build_resnet`'s.
    """
    kind = inspect.Parameter
    builder = inspect.signature(build_resnet).parameters

    def default(name):
        if name in defaults:
            return defaults[name]
        return ROW_DEFAULTS[name] if name in ROW_DEFAULTS else builder[name].default

    params = [kind(n, kind.POSITIONAL_OR_KEYWORD) for n in leading]
    params += [kind(n, kind.POSITIONAL_OR_KEYWORD, default=default(n))
               for n in APPLICATIONS_ARGUMENTS]
    params += [kind(n, kind.KEYWORD_ONLY, default=d) for n, d in (extra or {}).items()]
    params += [kind(n, kind.KEYWORD_ONLY, default=default(n)) for n in OPTIONS]
    return inspect.Signature(params)


def with_signature(signature, impl):
    """`impl(**arguments)` behind `signature`: a call binds as a `def` of that signature would
    (TypeError otherwise), defaults filled in; help() and inspect.signature show it."""
    @functools.wraps(impl)
    def fn(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return impl(**bound.arguments)

    fn.__signature__ = signature
    fn.__module__ = __name__
    return fn


def _create(arch_name, weights, variant, shortcut, name, **options):
    """`create`'s body: `options` are build_resnet's keyword arguments, passed on as given."""
    arch = arch_name if isinstance(arch_name, Arch) else resolve(arch_name)
    if weights == "default":
        weights = arch.weights
    row = None
    if isinstance(weights, str) and (weights in W.tags(arch.name) or not _looks_like_path(weights)):
        row = W.get(arch.name, weights)
        if variant is not None and variant != row.variant:
            raise ValueError(
                f"Weights {weights!r} for {arch.name} need the {row.variant!r} graph; received "
                f"variant={variant!r}. Drop `variant` or pick weights made for it "
                f"(available: {W.tags(arch.name)})."
            )
        variant = row.variant
    layout = variant or arch.layout
    if arch.layout == "v2" and layout != "v2":
        raise ValueError(f"{arch.name} is a pre-activation (V2) net; received variant={variant!r}.")
    if arch.layout != "v2" and layout not in ("v1", "v1.5"):
        raise ValueError(f"Unknown variant {variant!r} for {arch.name}: expected 'v1' or 'v1.5'.")
    preprocessing = None
    if options["include_preprocessing"]:
        if row is None:
            raise ValueError("include_preprocessing=True needs a named weight set (it puts that "
                             "set's normalization in the model); received weights="
                             f"{weights!r}.")
        preprocessing = normalization_constants(row.preprocessing, row.mean, row.std)
    return build_resnet(
        arch.stages, arch.block, stem=arch.stem,
        shortcut=arch.shortcut if shortcut == "default" else shortcut,
        layout=layout, stride_at=arch.stride_at,
        weights=None if row is not None else weights, weight_set=row,
        preprocessing=preprocessing, default_size=arch.default_size,
        name=name or arch.name, **options,
    )


create = with_signature(model_signature(["arch_name"]), _create)
create.__name__ = create.__qualname__ = "create"
create.__doc__ = """Builds the network `arch_name`: any name `resolve` accepts, or an `Arch` row.

    The arguments after `arch_name` are keras.applications' (in its positional order); the
    keyword-only ones are ours. See `ResNet50` for what each does. `weights="default"` is the
    row's own default (keras.applications' "imagenet" where a weight set exists, else None).
    """


def _looks_like_path(s):
    return "/" in s or "\\" in s or "." in s.rsplit("/", 1)[-1]


def _resnet(depth, plain, cifar, **options):
    """`ResNet`'s body: the row of `depth`, then `create` with the model arguments as given."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"`depth` must be an int such as 50 or 20; received {depth!r}.")
    if cifar is None:
        cifar = depth not in IMAGENET_DEPTHS
    if not cifar and depth not in IMAGENET_DEPTHS:
        raise ValueError(f"Unknown ImageNet ResNet depth {depth}: expected one of "
                         f"{sorted(IMAGENET_DEPTHS)}, or cifar=True with 6n+2.")
    family = "plain" if plain else "resnet"
    try:
        arch = resolve(f"{family}{depth}_cifar" if cifar else f"{family}{depth}")
    except ValueError:
        raise ValueError(f"Unknown ResNet depth {depth}: ImageNet depths are "
                         f"{sorted(IMAGENET_DEPTHS)} (Table 1), CIFAR depths are 6n+2 with n >= 1 "
                         f"(8, 14, 20, 32, ..., sec. 4.2); received depth={depth}.") from None
    return create(arch, **options)


ResNet = with_signature(model_signature(["depth"], {"plain": False, "cifar": None}), _resnet)
ResNet.__name__ = ResNet.__qualname__ = "ResNet"
ResNet.__doc__ = """Any depth: ImageNet (18/34/50/101/152, Table 1) or CIFAR (6n+2, sec. 4.2).

    `cifar` defaults to whichever family has `depth` (ImageNet for 50 and 152, which are both);
    `plain=True` drops the shortcuts. Other arguments as `create`.
    """


_DOC = """{title} ({ref}).

    Positional arguments are keras.applications', in its order: `include_top`, `weights`,
    `input_tensor`, `input_shape` ((H, W, C), or (C, H, W) under channels_first), `pooling`,
    `classes`, `classifier_activation`, `name`. Keyword-only: `include_preprocessing`
    (normalization inside the model, for a named weight set), `variant` ("v1":
    keras.applications graph, stride on the 1x1, conv biases; "v1.5": torchvision graph,
    stride on the 3x3, no conv biases, BN epsilon 1e-5), `shortcut` ("A", "B", "C", None),
    `synchronized_bn`, `bn_momentum` and `zero_init_residual` (each block an identity at
    initialization).
    {weights}
    Input: RGB (B, {size}, {size}, 3) by default ((B, 3, {size}, {size}) under channels_first),
    at least {min_size}x{min_size}. RGB weights also load into 1- or 4-channel inputs, the first
    conv adapted by timm's rule (`keras_resnet.weights.adapt_input_conv`).
    """
_CAFFE = ('weights="imagenet": keras.applications\' file (He et al.\'s Caffe model). Inputs need '
          '`preprocess_input(x, mode="caffe")`: RGB->BGR and ImageNet mean subtraction.')
_TF = ('weights="imagenet": keras.applications\' file. Inputs need '
       '`preprocess_input(x, mode="tf")`: scaled to [-1, 1].')


def _named(arch_name, title, ref, weights_doc="weights=None: random He-normal initialization."):
    """The public function of row `arch_name`: keras.applications' signature, in its positional
    order, with the row's own defaults; our extras keyword-only."""
    arch = ARCHS[arch_name]
    signature = model_signature(weights=arch.weights, name=arch_name, shortcut=arch.shortcut)
    fn = with_signature(signature, functools.partial(create, arch))
    fn.__name__ = fn.__qualname__ = title
    fn.__doc__ = _DOC.format(title=title, ref=ref, weights=weights_doc, size=arch.default_size,
                             min_size=32 if arch.stem == "imagenet" else 8)
    return fn


_TIMM_A1 = ('weights="imagenet" (the default) is timm\'s "a1_in1k" set ({top1}% top-1, '
            'Apache-2.0), '
            'the best permissive one; "tv_in1k" is torchvision\'s. Inputs need '
            '`preprocess_input(x, mode="torch")`, or pass include_preprocessing=True.')
ResNet18 = _named("resnet18", "ResNet18", "Table 1, 18-layer; basic blocks",
                  _TIMM_A1.format(top1=71.5))
ResNet34 = _named("resnet34", "ResNet34", "Table 1, 34-layer; basic blocks",
                  _TIMM_A1.format(top1=76.4))
ResNet50 = _named("resnet50", "ResNet50", "Table 1, 50-layer; bottleneck blocks", _CAFFE)
ResNet101 = _named("resnet101", "ResNet101", "Table 1, 101-layer; bottleneck blocks", _CAFFE)
ResNet152 = _named("resnet152", "ResNet152", "Table 1, 152-layer; bottleneck blocks", _CAFFE)
ResNet50V2 = _named("resnet50v2", "ResNet50V2", "He et al. 2016b, pre-activation", _TF)
ResNet101V2 = _named("resnet101v2", "ResNet101V2", "He et al. 2016b, pre-activation", _TF)
ResNet152V2 = _named("resnet152v2", "ResNet152V2", "He et al. 2016b, pre-activation", _TF)
ResNet20 = _named("resnet20", "ResNet20", "sec. 4.2, Table 6: n=3, 0.27M params")
ResNet32 = _named("resnet32", "ResNet32", "sec. 4.2, Table 6: n=5, 0.46M params")
ResNet44 = _named("resnet44", "ResNet44", "sec. 4.2, Table 6: n=7, 0.66M params")
ResNet56 = _named("resnet56", "ResNet56", "sec. 4.2, Table 6: n=9, 0.85M params")
ResNet110 = _named("resnet110", "ResNet110", "sec. 4.2, Table 6: n=18, 1.7M params")
ResNet1202 = _named("resnet1202", "ResNet1202", "sec. 4.2, Table 6: n=200, 19.4M params")
Plain18 = _named("plain18", "Plain18", "Table 2, plain-18: no shortcuts")
Plain34 = _named("plain34", "Plain34", "Table 2, plain-34: no shortcuts")
Plain50 = _named("plain50", "Plain50", "ResNet-50 without shortcuts")
Plain101 = _named("plain101", "Plain101", "ResNet-101 without shortcuts")
Plain152 = _named("plain152", "Plain152", "ResNet-152 without shortcuts")
Plain20 = _named("plain20", "Plain20", "Fig. 6 left, plain-20")
Plain32 = _named("plain32", "Plain32", "Fig. 6 left, plain-32")
Plain44 = _named("plain44", "Plain44", "Fig. 6 left, plain-44")
Plain56 = _named("plain56", "Plain56", "Fig. 6 left, plain-56")
Plain110 = _named("plain110", "Plain110", "Fig. 6 right, plain-110")
Plain1202 = _named("plain1202", "Plain1202", "plain counterpart of ResNet-1202")
