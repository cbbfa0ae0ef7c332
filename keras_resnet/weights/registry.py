"""The weight registry: (model, tag) -> where a weight set lives and how it was trained.

A row is data; `fetch` downloads a row's file once into the Keras cache and checks its hash.
"""

import dataclasses
import hashlib
import os
import socket
import urllib.parse
import urllib.request

import keras

from keras_resnet.preprocessing import IMAGENET_MEAN, IMAGENET_STD

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One pretrained weight set. `mean`/`std` are in [0, 1] units (None: the mode's defaults)."""

    model: str
    tag: str
    source: str
    url: str
    file_hash: str | None
    layout: str  # "keras_h5" | "safetensors" | "torch_pth"
    variant: str  # graph layout the file needs: "v1" | "v1.5" | "v2"
    preprocessing: str  # "caffe" | "tf" | "torch"
    mean: tuple | None = None
    std: tuple | None = None
    classes: int = 1000
    input_size: int = 224
    crop_fraction: float = 0.875
    license: str = ""
    top1: float | None = None
    url_notop: str | None = None
    file_hash_notop: str | None = None

    def file_name(self, include_top=True):
        url = self.url if include_top or not self.url_notop else self.url_notop
        base = os.path.basename(url)
        return base if self.layout == "keras_h5" else f"{self.model}.{self.tag}.{base}"


def _keras_applications(model, variant, preprocessing, top1, hashes):
    stem = f"{KERAS_APPLICATIONS_URL}{model}_weights_tf_dim_ordering_tf_kernels"
    return WeightSet(
        model=model, tag="imagenet", source="keras.applications", url=stem + ".h5",
        file_hash=hashes[0], layout="keras_h5", variant=variant, preprocessing=preprocessing,
        license="MIT (Kaiming He's Caffe models)" if variant == "v1" else "Apache-2.0",
        top1=top1, url_notop=stem + "_notop.h5", file_hash_notop=hashes[1],
    )


_REGISTRY = {}


def register(*rows):
    for row in rows:
        _REGISTRY[(row.model, row.tag)] = row


register(
    # Hashes are keras.applications' own (md5), so the same files verify.
    _keras_applications("resnet50", "v1", "caffe", 74.9,
                        ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626")),
    _keras_applications("resnet101", "v1", "caffe", 76.4,
                        ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21")),
    _keras_applications("resnet152", "v1", "caffe", 76.6,
                        ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c")),
    _keras_applications("resnet50v2", "v2", "tf", 76.0,
                        ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917")),
    _keras_applications("resnet101v2", "v2", "tf", 77.2,
                        ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5")),
    _keras_applications("resnet152v2", "v2", "tf", 78.0,
                        ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33")),
)


HF_URL = "https://huggingface.co/timm/{model}.{tag}/resolve/main/model.safetensors"


def _timm(model, tag, top1):
    """A timm Hub weight set. Values are timm's pretrained_cfg at 224 px: a*/a1h* are timm's own
    (Apache-2.0, crop 0.95, bicubic); tv_in1k/tv2_in1k are torchvision's IMAGENET1K_V1/V2
    (BSD-3-Clause; V1 crop 0.875, V2 evaluated at 224 with crop 0.965 = 224/232, bilinear)."""
    timm_own = not tag.startswith("tv")
    return WeightSet(
        model=model, tag=tag, source="timm" if timm_own else "torchvision (via timm)",
        url=HF_URL.format(model=model, tag=tag),
        file_hash=None,  # not known offline; the reader checks the safetensors header instead
        layout="safetensors", variant="v1.5", preprocessing="torch",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, classes=1000, input_size=224,
        crop_fraction={"tv_in1k": 0.875, "tv2_in1k": 0.965}.get(tag, 0.95),
        license="Apache-2.0" if timm_own else "BSD-3-Clause", top1=top1,
    )


# PyTorch checkpoints (read by `torch_checkpoints`). Top-1 (%) at 224 px as published in timm's
# ImageNet results table.
TIMM_WEIGHT_SETS = (
    _timm("resnet18", "a1_in1k", 71.5),
    _timm("resnet18", "tv_in1k", 69.8),
    _timm("resnet34", "a1_in1k", 76.4),
    _timm("resnet34", "tv_in1k", 73.3),
    _timm("resnet50", "a1_in1k", 80.4),
    _timm("resnet50", "tv2_in1k", 80.8),
    _timm("resnet50", "tv_in1k", 76.2),
    _timm("resnet101", "a1h_in1k", 82.0),
    _timm("resnet101", "tv2_in1k", 81.9),
    _timm("resnet152", "a1h_in1k", 82.8),
    _timm("resnet152", "tv2_in1k", 82.3),
)
register(*TIMM_WEIGHT_SETS)

# Tags whose weights are CC-BY-NC-4.0 (non-commercial): never served by name.
NONCOMMERCIAL_TAG_PREFIXES = ("fb_ssl", "fb_swsl")


def refuse_noncommercial(model, tag):
    """Raises ValueError for timm's CC-BY-NC-4.0 tags (fb_ssl_*, fb_swsl_*)."""
    if str(tag).startswith(NONCOMMERCIAL_TAG_PREFIXES):
        raise ValueError(
            f"Weight set {tag!r} for {model} is licensed CC-BY-NC-4.0 (non-commercial use only), "
            "so it is not served by name. If your use is non-commercial, download "
            f"timm/{model}.{tag} yourself and pass weights=<path to model.safetensors>."
        )


# keras.applications has no ResNet-18/34: "imagenet" there means the best permissive set.
ALIASES = {("resnet18", "imagenet"): "a1_in1k", ("resnet34", "imagenet"): "a1_in1k"}


def get(model, tag):
    """The row for `model`'s weight set `tag`, or a ValueError listing the model's tags."""
    refuse_noncommercial(model, tag)
    try:
        return _REGISTRY[(model, ALIASES.get((model, tag), tag))]
    except KeyError:
        raise ValueError(
            f"No weight set {tag!r} for {model}; available: {tags(model) or 'none'}. "
            "Pass weights=None for random initialization or a path to a weights file."
        ) from None


def tags(model):
    """The registry tags of `model` ('imagenet', 'a1_in1k', ...), sorted."""
    return sorted({t for m, t in _REGISTRY if m == model} | {t for m, t in ALIASES if m == model})


def rows():
    return list(_REGISTRY.values())


def cache_dir():
    """Where downloads go: $KERAS_HOME/models, else ~/.keras/models (as keras.utils.get_file)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def file_digest(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_hash(path, expected):
    if expected is None:
        return
    actual = file_digest(path, "md5" if len(expected) == 32 else "sha256")
    if actual != expected:
        raise ValueError(
            f"Hash mismatch for {path}: expected {expected}, got {actual}. The file is corrupt, "
            "truncated or a different release: delete it and download it again."
        )


def _check_reachable(url, timeout=5.0):
    """Raises OSError at once when `url`'s host cannot be reached: `keras.utils.get_file` has no
    timeout, so on a network that drops packets it would hang instead of failing."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):  # the proxy is what we reach
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname, port), timeout=timeout):
        pass


def fetch(row, include_top=True):
    """Path of `row`'s file in the Keras cache, downloading it once; verifies its hash."""
    top = include_top or not row.url_notop
    url, expected = (row.url, row.file_hash) if top else (row.url_notop, row.file_hash_notop)
    path = os.path.join(cache_dir(), row.file_name(include_top))
    if not os.path.exists(path):
        try:
            _check_reachable(url)
            keras.utils.get_file(os.path.basename(path), url,
                                 cache_dir=os.path.dirname(cache_dir()),
                                 cache_subdir="models")
        except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
            if os.path.exists(path):
                os.remove(path)
            raise OSError(
                f"Could not download the {row.model} weights {row.tag!r} "
                f"({os.path.basename(path)}) "
                f"from {url}: {e}. Offline, download that file on a machine with network and "
                f"put it at {path} (or set KERAS_HOME), or pass weights=<local path>."
            ) from e
    check_hash(path, expected)
    return path
