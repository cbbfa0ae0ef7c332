"""PyTorch ResNet checkpoints (torchvision and timm): reading them, and mapping their keys onto
our v1.5 models. The weight sets themselves (URLs, licenses) are rows in `registry`.

timm's `resnet18/34/50/101/152` use torchvision's module names, so one mapping serves both:

    torch key                            Keras layer (weights in Keras order)
    conv1.weight                         conv1_conv             [kernel]
    bn1.{weight,bias,running_mean,running_var}
                                         conv1_bn               [gamma, beta, moving_mean,
                                                                 moving_variance]
    layer{s}.{j}.conv{k}.weight          conv{s+1}_block{j+1}_{k}_conv
    layer{s}.{j}.bn{k}.*                 conv{s+1}_block{j+1}_{k}_bn
    layer{s}.{j}.downsample.0.weight     conv{s+1}_block{j+1}_0_conv   (the projection)
    layer{s}.{j}.downsample.1.*          conv{s+1}_block{j+1}_0_bn
    fc.{weight,bias}                     predictions            [kernel, bias]

Conv kernels go from torch's (out, in, kh, kw) to Keras' (kh, kw, in, out); the classifier from
(classes, features) to (features, classes). `num_batches_tracked` is ignored. Keras kernels are
(kh, kw, in, out) in both image data formats, so one mapping serves channels_first models too.

Reading needs no torch for `.safetensors` (the `safetensors` numpy API); a `.pth` is read only
with torch installed, through `torch.load(weights_only=True)`, never by plain unpickling.
"""

import re

import numpy as np

from keras_resnet.weights.mismatch import mismatch_problems

# --- reading -----------------------------------------------------------------------------------


def read_safetensors(path) -> dict:
    """{torch key: np.ndarray} from a `.safetensors` file, without torch.

    A truncated or corrupt file fails here (the header must cover the whole file), before any
    weight is assigned.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"{path} is not a readable .safetensors file (truncated, corrupt or an unsupported "
            f"dtype): {e}. Download it again."
        ) from e


def read_torch_pth(path) -> dict:
    """{torch key: np.ndarray} from a torchvision-style `.pth` state dict.

    Needs torch and uses `torch.load(weights_only=True)`, which refuses arbitrary pickled code.
    A checkpoint that wraps the state dict (`{"state_dict": ...}`, `{"model": ...}`) and
    DataParallel's `module.` prefix are accepted.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {path} needs PyTorch: a .pth file is a pickle, and it is only read safely "
            "through torch.load(weights_only=True). Install torch, or convert the file to "
            ".safetensors (safetensors.torch.save_file) and load that instead."
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(
            f"Could not read {path} with torch.load(weights_only=True) (truncated, corrupt, or "
            f"not a plain state dict): {e}"
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return {k.removeprefix("module."): v.detach().cpu().numpy()
            for k, v in obj.items() if torch.is_tensor(v)}


def read_state_dict(path):
    """Dispatches on the suffix: `.safetensors`, else a torch pickle (`.pth`, `.pt`, `.bin`)."""
    return read_safetensors(path) if str(path).endswith(".safetensors") else read_torch_pth(path)


# --- mapping -----------------------------------------------------------------------------------

_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")
_BN_SLOTS = ("weight", "bias", "running_mean", "running_var")


def torch_prefix(layer_name):
    """Our layer name -> torch module path, or None for layers with no torch counterpart.

    `conv3_block2_1_conv` -> `layer2.1.conv1`; `conv4_block1_0_bn` -> `layer3.0.downsample.1`.
    """
    fixed = {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"}
    if layer_name in fixed:
        return fixed[layer_name]
    m = _BLOCK.match(layer_name)
    if not m:
        return None
    stage, block, k, kind = int(m[1]), int(m[2]), m[3], m[4]
    base = f"layer{stage - 1}.{block - 1}."
    if k == "0":
        return base + ("downsample.0" if kind == "conv" else "downsample.1")
    return base + f"{kind}{k}"


def _slots(layer):
    """[(torch suffix, torch shape, to_keras)] in the layer's Keras weight order."""
    import keras

    shapes = [tuple(w.shape) for w in layer.weights]
    if isinstance(layer, keras.layers.BatchNormalization):
        if not (layer.scale and layer.center):
            raise ValueError(f"{layer.name}: BatchNormalization without scale/center has no "
                             "torch twin.")
        return [(s, shapes[0], np.asarray) for s in _BN_SLOTS]
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, i, o = shapes[0]
        out = [("weight", (o, i, kh, kw), lambda a: np.transpose(a, (2, 3, 1, 0)))]
        return out + ([("bias", shapes[1], np.asarray)] if layer.use_bias else [])
    if isinstance(layer, keras.layers.Dense):
        fin, fout = shapes[0]
        return [("weight", (fout, fin), np.transpose), ("bias", shapes[1], np.asarray)]
    raise ValueError(f"{layer.name}: no torch mapping for a {type(layer).__name__} layer.")


def _check_layout(model):
    """Torch checkpoints need the v1.5 graph: bias-free convs, 3x3 strides, BN epsilon 1e-5."""
    import keras

    wrong = []
    for layer in model.layers:
        if torch_prefix(layer.name) is None:
            continue
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            wrong.append(f"{layer.name} has a bias")
        elif isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1) \
                and layer.strides != (1, 1) and not layer.name.endswith("_0_conv"):
            wrong.append(f"{layer.name} strides its 1x1 conv")
        elif (isinstance(layer, keras.layers.BatchNormalization)
              and abs(layer.epsilon - 1e-5) > 1e-9):
            wrong.append(f"{layer.name} has epsilon {layer.epsilon}")
    if wrong:
        raise ValueError(
            f"Model {model.name!r} is not built in PyTorch's layout ({'; '.join(wrong[:3])}): "
            "torchvision/timm weights need variant='v1.5' (stride on the 3x3, no conv bias, "
            "BatchNorm epsilon 1e-5)."
        )


def _blocks_per_stage(keys):
    """{stage: number of blocks} from torch keys `layer{s}.{j}.`."""
    found = {}
    for key in keys:
        m = re.match(r"layer(\d+)\.(\d+)\.", key)
        if m:
            found[int(m[1])] = max(found.get(int(m[1]), 0), int(m[2]) + 1)
    return [found[s] for s in sorted(found)]


def _natural(key):
    """Sort key: `layer3.6` before `layer3.10`."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def torch_state_dict_to_keras(state_dict: dict, model, skip=()) -> dict:
    """Maps a torchvision/timm ResNet state dict onto `model`'s layers.

    Args:
        state_dict: {torch key: array}, e.g. `layer1.0.conv1.weight` of shape (64, 64, 1, 1).
        model: a keras_resnet v1.5 model (any depth, with or without the classifier).
        skip: Keras layer names left out: neither expected in the file nor taken from it (a
            classifier of another class count, in transfer learning).
    Returns:
        {layer name: [arrays in Keras weight order]} for every mapped layer of `model`, ready for
        `keras_resnet.weights.assign_weights`. `fc.*` is dropped when the model has no classifier.
    Raises:
        ValueError naming the missing and unexpected torch keys and every shape mismatch (in
        torch's shapes), before anything is assigned.
    """
    _check_layout(model)
    expected = {}  # torch key -> (layer name, slot index, torch shape, to_keras)
    skipped = tuple(f"{torch_prefix(name)}." for name in skip if torch_prefix(name))
    for layer in model.layers:
        prefix = torch_prefix(layer.name)
        if prefix is None or not layer.weights or layer.name in skip:
            continue
        for i, (suffix, shape, fn) in enumerate(_slots(layer)):
            expected[f"{prefix}.{suffix}"] = (layer.name, i, shape, fn)

    given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
             and not (skipped and k.startswith(skipped))}
    if not any(k.startswith("fc.") for k in expected):
        given = {k: v for k, v in given.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [f"{k}: file {tuple(np.shape(given[k]))} vs model {expected[k][2]}"
                  for k in sorted(set(expected) & set(given))
                  if tuple(np.shape(given[k])) != expected[k][2]]
    if missing or unexpected or mismatched:
        problems = []
        file_blocks, model_blocks = _blocks_per_stage(given), _blocks_per_stage(expected)
        if file_blocks != model_blocks:
            problems.append(f"the file has {file_blocks} blocks per stage, the model "
                            f"{model_blocks} (a different depth)")
        if "fc.weight" in given and "fc.weight" in expected and \
                np.shape(given["fc.weight"])[0] != expected["fc.weight"][2][0]:
            problems.append(f"the file's classifier has {np.shape(given['fc.weight'])[0]} classes, "
                            f"the model {expected['fc.weight'][2][0]} (set classes= to match, or "
                            "include_top=False)")
        problems += mismatch_problems(*(sorted(items, key=_natural) for items in
                                               (missing, unexpected, mismatched)), shown=6)
        raise ValueError(
            f"The PyTorch weights do not fit model {model.name!r}; nothing was loaded. "
            + "; ".join(problems)
        )

    out = {}
    for key, (name, i, _, fn) in expected.items():
        out.setdefault(name, {})[i] = np.asarray(fn(np.asarray(given[key], np.float32)))
    return {name: [arrays[i] for i in sorted(arrays)] for name, arrays in out.items()}
