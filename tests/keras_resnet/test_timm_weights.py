"""PyTorch checkpoints (torchvision/timm) in our v1.5 models, checked against PyTorch itself.

torchvision builds each net with random weights; every BatchNorm gets non-trivial gamma, beta,
mean and variance (torch initializes gamma=1, beta=0, mean=0, var=1, which would hide a swapped
mapping); the state dict is saved as .safetensors and .pth, loaded into our model, and both
frameworks' logits on the same images (NHWC for Keras, NCHW for torch) must agree.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")

import keras_resnet  # noqa: E402
from keras_resnet import convert  # noqa: E402
from keras_resnet.weights import load_weights, registry  # noqa: E402
from keras_resnet.weights import torch_checkpoints as tc  # noqa: E402

CONSTRUCTORS = {18: keras_resnet.ResNet18, 34: keras_resnet.ResNet34, 50: keras_resnet.ResNet50,
                101: keras_resnet.ResNet101, 152: keras_resnet.ResNet152}
SIZES = {18: 224, 34: 224, 50: 160, 101: 96, 152: 96}  # small inputs keep 101/152 fast


def randomize_batchnorm(net, seed, size=64):
    """Gives every BatchNorm2d of a torch net its own gamma, beta, running mean and variance.

    The statistics are first measured on random images (so activations stay O(1) even in
    ResNet-152), then perturbed per channel, so that none is 0 or 1.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            n = m.num_features
            m.weight.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.copy_(0.2 * torch.randn(n, generator=g))
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        net.train()(torch.randn(4, 3, size, size, generator=g))
        for m in bns:
            n = m.num_features
            m.running_mean.add_(0.1 * torch.randn(n, generator=g) * m.running_var.sqrt())
            m.running_var.mul_(0.7 + 0.6 * torch.rand(n, generator=g))
            m.momentum = 0.1
    return net.eval()


def torch_resnet(depth, seed=0, num_classes=1000):
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
    return randomize_batchnorm(net, seed + 1)


def images(n, size, seed=0):
    """(n, size, size, 3) float32 NHWC, roughly normalized."""
    return np.random.RandomState(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def torch_logits(net, x_nhwc):
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def keras_logits(model, x):
    return np.asarray(model(x, training=False))


def assert_same_logits(ours, theirs):
    """max |diff| <= 1e-4 * max |logit| and identical top-5; returns the relative difference.

    Keras and PyTorch sum the same products in different orders. Measured max |diff| / max
    |logit| on these nets: 9e-7 (ResNet-18) to 7.2e-6 (ResNet-152 at 96 px) with oneDNN,
    1e-6 to 5.7e-6 with Eigen (TF_ENABLE_ONEDNN_OPTS=0); float32 epsilon 1.2e-7 times the
    growth over 18-152 layers. 1e-4 is 14x the largest; a mapping error is O(1).
    """
    scale = np.abs(theirs).max()
    diff = np.abs(ours - theirs).max()
    print(f"keras vs torch: max |diff| / max |logit| = {diff / scale:.2e}")  # shown with -s
    assert diff <= 1e-4 * scale, f"max |diff| {diff:.3g} > 1e-4 * max |logit| {scale:.3g}"
    np.testing.assert_array_equal(np.argsort(-ours, axis=1)[:, :5],
                                  np.argsort(-theirs, axis=1)[:, :5])
    return diff / scale


def save(net, path):
    """Writes the net's state dict to `path` (.safetensors or .pth); returns the path."""
    path = str(path)
    if path.endswith(".safetensors"):
        safetensors_torch.save_file(net.state_dict(), path, metadata={"format": "pt"})
    else:
        torch.save(net.state_dict(), path)
    return path


def snapshot(model):
    return [w.copy() for w in model.get_weights()]


def assert_unchanged(model, before):
    after = model.get_weights()
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(after, before)), "the model was modified"


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """A torchvision ResNet-50 with random weights and its .safetensors file."""
    net = torch_resnet(50, seed=50)
    return net, save(net, tmp_path_factory.mktemp("r50") / "resnet50.safetensors")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache: named weight sets resolve to files placed here, never the network."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


def place_in_cache(net, row, cache):
    """Puts `net`'s weights where `registry.fetch` looks for `row` (as an offline user would)."""
    os.makedirs(cache, exist_ok=True)
    return save(net, cache / row.file_name())


# --- the forward pass equals PyTorch's -------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_logits_match_torchvision(depth, tmp_path):
    net = torch_resnet(depth, seed=depth)
    st = save(net, tmp_path / f"resnet{depth}.safetensors")
    size = SIZES[depth]
    model = CONSTRUCTORS[depth](weights=st, variant="v1.5", input_shape=(size, size, 3),
                                classifier_activation=None)
    x = images(2, size, seed=depth)
    ours, theirs = keras_logits(model, x), torch_logits(net, x)
    rel = assert_same_logits(ours, theirs)
    print(f"resnet{depth} {size}px: max |diff| {np.abs(ours - theirs).max():.2e}, "
          f"max |logit| {np.abs(theirs).max():.1f}, ratio {rel:.2e}")

    if depth > 50:
        return  # the .pth route, checked on the smaller nets, is the same for every depth
    # The .pth route maps to exactly the same arrays.
    pth = save(net, tmp_path / f"resnet{depth}.pth")
    from_st = tc.torch_state_dict_to_keras(tc.read_safetensors(st), model)
    from_pth = tc.torch_state_dict_to_keras(tc.read_torch_pth(pth), model)
    assert from_st.keys() == from_pth.keys()
    for name in from_st:
        for a, b in zip(from_st[name], from_pth[name]):
            np.testing.assert_array_equal(a, b)


def test_pth_path_loads_through_the_constructor(tmp_path):
    net = torch_resnet(18, seed=7)
    model = keras_resnet.ResNet18(weights=save(net, tmp_path / "r18.pth"),
                                  classifier_activation=None)
    x = images(2, 224, seed=7)
    assert_same_logits(keras_logits(model, x), torch_logits(net, x))


def test_backbone_ignores_the_classifier(tmp_path):
    net = torch_resnet(18, seed=3)
    model = keras_resnet.ResNet18(weights=save(net, tmp_path / "r18.safetensors"),
                                  include_top=False, pooling="avg", input_shape=(128, 128, 3))
    net.fc = torch.nn.Identity()
    x = images(2, 128, seed=3)
    assert_same_logits(keras_logits(model, x), torch_logits(net, x))


def test_named_weights_with_preprocessing_inside(r50, keras_home):
    """ResNet50(weights="tv2_in1k", include_preprocessing=True) takes [0, 255] RGB pixels and
    matches torch on (x / 255 - mean) / std; the file comes from the cache, offline."""
    net, path = r50
    row = registry.get("resnet50", "tv2_in1k")
    os.makedirs(keras_home)
    os.symlink(path, keras_home / row.file_name())
    model = keras_resnet.ResNet50(weights="tv2_in1k", include_preprocessing=True,
                                  input_shape=(96, 96, 3), classifier_activation=None)
    pixels = np.random.RandomState(1).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    normalized = (pixels / 255.0 - np.array(row.mean, np.float32)) / np.array(row.std, np.float32)
    assert_same_logits(keras_logits(model, pixels), torch_logits(net, normalized))
    # preprocess_input with the weight set's mode gives the same as the built-in layer.
    np.testing.assert_allclose(
        keras_resnet.preprocess_input(pixels, mode=row.preprocessing, mean=row.mean, std=row.std),
        # (x - 255 m) / (255 s) vs (x / 255 - m) / s in float32, values up to 2.64 (ulp
        # 2.4e-7): measured 4.8e-7 (numpy, either oneDNN setting); 4x.
        normalized, rtol=0, atol=2e-6)


# --- timm -----------------------------------------------------------------------------------


def test_registry_rows():
    expected = {("resnet18", "a1_in1k"): 71.5, ("resnet18", "tv_in1k"): 69.8,
                ("resnet34", "a1_in1k"): 76.4, ("resnet34", "tv_in1k"): 73.3,
                ("resnet50", "a1_in1k"): 80.4, ("resnet50", "tv2_in1k"): 80.8,
                ("resnet50", "tv_in1k"): 76.2, ("resnet101", "a1h_in1k"): 82.0,
                ("resnet101", "tv2_in1k"): 81.9, ("resnet152", "a1h_in1k"): 82.8,
                ("resnet152", "tv2_in1k"): 82.3}
    for (model, tag), top1 in expected.items():
        row = registry.get(model, tag)
        assert row.top1 == top1 and row.variant == "v1.5" and row.layout == "safetensors"
        assert row.url == f"https://huggingface.co/timm/{model}.{tag}/resolve/main/model.safetensors"
        assert row.license == ("BSD-3-Clause" if tag.startswith("tv") else "Apache-2.0")
    with pytest.raises(ValueError, match="CC-BY-NC-4.0"):
        keras_resnet.ResNet50(weights="fb_ssl_yfcc100m_ft_in1k")
    with pytest.raises(ValueError, match="CC-BY-NC-4.0"):
        keras_resnet.ResNet18(weights="fb_swsl_ig1b_ft_in1k")


def test_timm_checkpoint_and_pretrained_cfg(keras_home):
    """timm's resnet keys are torchvision's; its pretrained_cfg is what our registry records."""
    timm = pytest.importorskip("timm")
    for row in registry.TIMM_WEIGHT_SETS:
        cfg = timm.create_model(f"{row.model}.{row.tag}", pretrained=False).pretrained_cfg
        assert tuple(cfg["mean"]) == row.mean and tuple(cfg["std"]) == row.std
        assert cfg["num_classes"] == row.classes and cfg["license"] == row.license.lower()
        size = (cfg.get("test_input_size") or cfg["input_size"])[-1]
        crop = cfg.get("test_crop_pct") or cfg["crop_pct"]
        if size != row.input_size:  # a1: timm also tests at 288 (crop 1.0); we record 224
            size, crop = cfg["input_size"][-1], cfg["crop_pct"]
        assert (size, crop) == (row.input_size, row.crop_fraction), (row.tag, cfg)

    net = timm.create_model("resnet50.a1_in1k", pretrained=False)
    assert set(net.state_dict()) == set(torchvision.models.resnet50().state_dict())
    randomize_batchnorm(net, seed=11)
    row = registry.get("resnet50", "a1_in1k")
    place_in_cache(net, row, keras_home)
    model = keras_resnet.ResNet50(weights="a1_in1k", include_preprocessing=True,
                                  input_shape=(96, 96, 3), classifier_activation=None)
    pixels = np.random.RandomState(2).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    normalized = (pixels / 255.0 - np.array(row.mean, np.float32)) / np.array(row.std, np.float32)
    assert_same_logits(keras_logits(model, pixels), torch_logits(net, normalized))


# --- errors: clear, and never a half-loaded model -----------------------------------------------


@pytest.fixture(scope="module")
def r18_state():
    return {k: v.numpy() for k, v in torch_resnet(18, seed=18).state_dict().items()}


@pytest.fixture(scope="module")
def r18_model():
    return keras_resnet.ResNet18(weights=None, input_shape=(64, 64, 3))


def write_state(state, path):
    safetensors_torch.save_file({k: torch.from_numpy(np.ascontiguousarray(v))
                                 for k, v in state.items()}, str(path))
    return str(path)


def test_resnet50_weights_into_resnet101(r50):
    model = keras_resnet.ResNet101(weights=None, variant="v1.5", input_shape=(64, 64, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"\[3, 4, 6, 3\] blocks per stage.*\[3, 4, 23, 3\]") as e:
        load_weights(model, r50[1])
    assert "missing in the file: layer3.6.bn1.bias" in str(e.value)
    assert "(255 in all)" in str(e.value)  # 17 missing blocks x 15 tensors
    assert_unchanged(model, before)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("layer2.1.bn2.running_var"),
     r"missing in the file: layer2\.1\.bn2\.running_var"),
    (lambda s: s.update({"layer1.0.se.fc1.weight": np.zeros((4, 64, 1, 1), np.float32)}),
     r"not in the model: layer1\.0\.se\.fc1\.weight"),
    (lambda s: s.update({"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1), np.float32)}),
     r"layer1\.0\.conv2\.weight: file \(64, 64, 1, 1\) vs model \(64, 64, 3, 3\)"),
])
def test_missing_extra_or_misshapen_key(r18_state, r18_model, tmp_path, edit, message):
    state = dict(r18_state)
    edit(state)
    before = snapshot(r18_model)
    with pytest.raises(ValueError, match=message):
        load_weights(r18_model, write_state(state, tmp_path / "edited.safetensors"))
    assert_unchanged(r18_model, before)


def test_wrong_class_count(r18_state, tmp_path):
    path = write_state(r18_state, tmp_path / "r18.safetensors")
    model = keras_resnet.ResNet18(weights=None, classes=10, input_shape=(64, 64, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"classifier has 1000 classes, the model 10") as e:
        load_weights(model, path)
    assert "fc.weight: file (1000, 512) vs model (10, 512)" in str(e.value)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="1000 classes"):
        keras_resnet.ResNet18(weights=path, classes=10)


def test_truncated_safetensors(r18_state, r18_model, tmp_path):
    full = open(write_state(r18_state, tmp_path / "full.safetensors"), "rb").read()
    for cut in (len(full) // 2, 20):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(full[:cut])
        before = snapshot(r18_model)
        with pytest.raises(ValueError, match=r"cut\d+\.safetensors is not a readable .safetensors"):
            load_weights(r18_model, str(path))
        assert_unchanged(r18_model, before)


def test_v1_graph_is_refused(r50):
    model = keras_resnet.ResNet50(weights=None, variant="v1", input_shape=(64, 64, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"variant='v1\.5'"):
        load_weights(model, r50[1])
    assert_unchanged(model, before)


def test_pth_without_torch_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match=r"needs PyTorch.*weights_only=True"):
        tc.read_torch_pth(str(tmp_path / "x.pth"))


def test_pth_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is rejected, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, path)  # a callable: not weights
    with pytest.raises(ValueError, match="weights_only=True"):
        tc.read_torch_pth(str(path))


def test_offline_named_weights_say_where_to_put_the_file(keras_home):
    with pytest.raises(OSError) as e:
        keras_resnet.ResNet50(weights="tv2_in1k")
    text = str(e.value)
    assert "resnet50.tv2_in1k" in text and "huggingface.co/timm/resnet50.tv2_in1k" in text
    assert str(keras_home) in text


# --- the converter ------------------------------------------------------------------------------


def test_convert_local_file_roundtrip(tmp_path):
    net = torch_resnet(18, seed=21)
    src = save(net, tmp_path / "mine.safetensors")
    h5, meta_path = convert.convert("resnet18", src, str(tmp_path / "out"))
    assert h5.endswith("resnet18_mine.weights.h5")
    meta = json.load(open(meta_path))
    assert meta["source_sha256"] == hashlib.sha256(open(src, "rb").read()).hexdigest()
    assert meta["preprocessing"]["mode"] == "torch" and meta["variant"] == "v1.5"
    model = keras_resnet.ResNet18(weights=h5, classifier_activation=None)
    x = images(2, 224, seed=21)
    assert_same_logits(keras_logits(model, x), torch_logits(net, x))


def test_convert_cli_named_tag(keras_home, tmp_path):
    net = torch_resnet(18, seed=22)
    row = registry.get("resnet18", "tv_in1k")
    place_in_cache(net, row, keras_home)
    out = tmp_path / "out"
    env = dict(os.environ, KERAS_HOME=str(keras_home.parent), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_resnet.convert", "--model", "resnet18",
                           "--weights", "tv_in1k", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resnet18_tv_in1k.weights.h5" in proc.stdout and " s." in proc.stdout
    meta = json.load(open(out / "resnet18_tv_in1k.json"))
    assert meta["license"] == "BSD-3-Clause" and meta["url"] == row.url
    assert meta["top1"] == 69.8 and meta["preprocessing"]["crop_fraction"] == 0.875
    model = keras_resnet.ResNet18(weights=str(out / "resnet18_tv_in1k.weights.h5"),
                                  input_shape=(96, 96, 3), classifier_activation=None)
    x = images(2, 96, seed=5)
    assert_same_logits(keras_logits(model, x), torch_logits(net, x))


def test_imagenet_for_resnet18_34_is_the_best_permissive_set():
    for model in ("resnet18", "resnet34"):
        row = registry.get(model, "imagenet")
        assert row is registry.get(model, "a1_in1k")
        assert row.license == "Apache-2.0"
        best = max((r for r in registry.rows() if r.model == model and r.license != ""),
                   key=lambda r: r.top1)
        assert row is best
