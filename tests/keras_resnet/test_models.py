"""Every variant builds, runs, trains a step and round-trips; counts match the paper's tables."""

import keras
import numpy as np
import pytest

import keras_resnet


def trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("depth, printed",
                         [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_params_match_table6(depth, printed):
    model = keras_resnet.ResNet(depth, weights=None, input_shape=(32, 32, 3), classes=10)
    digits = len(str(printed).split(".")[1])
    assert round(trainable(model) / 1e6, digits) == printed


@pytest.mark.slow
def test_resnet1202_params_match_table6_and_trains_one_step():
    model = keras_resnet.ResNet1202(weights=None, input_shape=(32, 32, 3), classes=10)
    assert round(trainable(model) / 1e6, 1) == 19.4
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(np.random.rand(2, 32, 32, 3).astype("float32"), np.array([1, 2]))
    assert np.isfinite(loss)


# torchvision's parameter counts (BN running statistics are buffers there, not parameters).
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160,
                      152: 60_192_808}
TABLE1_MULT_ADDS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


@pytest.mark.parametrize("depth", sorted(TABLE1_MULT_ADDS))
def test_imagenet_counts_match_table1_and_torchvision(depth):
    model = keras_resnet.ResNet(depth, weights=None, variant="v1.5")
    assert trainable(model) == TORCHVISION_PARAMS[depth]
    v1 = model if depth < 50 else keras_resnet.ResNet(depth, weights=None, variant="v1")
    # Table 1 prints two significant digits (1.8, 3.6, 3.8, 7.6, 11.3 x 10^9): 5% is its rounding
    # and counting conventions the paper does not spell out; an integer count, no float noise.
    assert keras_resnet.count_multiply_adds(v1) == pytest.approx(TABLE1_MULT_ADDS[depth], rel=0.05)


@pytest.mark.parametrize("ours, reference", [
    (keras_resnet.ResNet50, keras.applications.ResNet50),
    (keras_resnet.ResNet101, keras.applications.ResNet101),
    (keras_resnet.ResNet50V2, keras.applications.ResNet50V2),
])
def test_v1_and_v2_param_counts_equal_keras_applications(ours, reference):
    assert ours(weights=None).count_params() == reference(weights=None).count_params()


def test_count_multiply_adds_on_a_single_conv():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.Flatten(), keras.layers.Dense(5)])
    assert keras_resnet.count_multiply_adds(model) == 8 * 8 * 3 * 3 * 3 * 4 + 256 * 5


FAST = [n for n in keras_resnet.ARCHS if not n.endswith(("1202", "152", "101", "v2"))]
# ResNet-1202 at initialization overflows in inference mode (600 residual sums of unnormalized
# branches: BN's initial moving variance is 1); it builds and trains in its own test above.
SLOW = [n for n in keras_resnet.ARCHS if n not in FAST and n != "resnet1202"]


def _build_run_step_roundtrip(name, tmp_path):
    arch = keras_resnet.ARCHS[name]
    size = 32 if arch.stem == "cifar" else 64
    model = keras_resnet.create(name, weights=None, input_shape=(size, size, 3), classes=7)
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    before = model.predict(x, verbose=0)
    assert before.shape == (2, 7)
    # A float32 softmax over 7 classes sums to 1 within ~2 x 7 roundings (1.7e-6); measured 0.
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    kernel = model.get_layer("conv1_conv").kernel.numpy().copy()
    loss = model.train_on_batch(x, np.array([0, 3]))
    assert np.isfinite(loss)
    assert not np.array_equal(kernel, model.get_layer("conv1_conv").kernel.numpy())
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("name", FAST)
def test_variant_builds_runs_trains_and_roundtrips(name, tmp_path):
    _build_run_step_roundtrip(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_deep_variant_builds_runs_trains_and_roundtrips(name, tmp_path):
    _build_run_step_roundtrip(name, tmp_path)


def test_stage_strides_and_names_follow_table1():
    model = keras_resnet.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    features = keras_resnet.feature_extractor(model)
    shapes = {k: tuple(v.shape[1:]) for k, v in features.output.items()}
    assert shapes == {"C2": (56, 56, 256), "C3": (28, 28, 512), "C4": (14, 14, 1024),
                      "C5": (7, 7, 2048)}
    out = features(np.zeros((1, 224, 224, 3), "float32"))
    # The same graph and weights: bitwise (measured 0 with oneDNN and Eigen).
    np.testing.assert_array_equal(out["C5"], model(np.zeros((1, 224, 224, 3), "float32")))
    assert keras_resnet.stage_names(keras_resnet.ResNet50V2(weights=None))["C5"] == "post_relu"


def test_shortcut_options_change_only_the_shortcuts():
    counts = {s: trainable(keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10,
                                                 shortcut=s)) for s in ("A", "B", "C", None)}
    # A adds no parameters over plain; B adds the two projections (16->32, 32->64) with BN.
    assert counts["A"] == counts[None]
    assert counts["B"] - counts["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert counts["C"] > counts["B"]
    plain = keras_resnet.Plain20(weights=None, input_shape=(32, 32, 3), classes=10)
    assert not any(isinstance(l, keras.layers.Add) for l in plain.layers)


def test_option_a_shortcut_is_subsampled_identity_with_zero_channels():
    layer = keras_resnet.ZeroPadShortcut(8, 2)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    y = np.asarray(layer(x))
    expected = np.zeros((2, 3, 3, 8), "float32")
    expected[..., :3] = x[:, ::2, ::2, :]
    np.testing.assert_array_equal(y, expected)


def test_v15_strides_the_3x3_and_pads_symmetrically():
    model = keras_resnet.ResNet50(weights=None, variant="v1.5")
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert model.get_layer("conv3_block1_2_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("conv3_block1_2_conv").use_bias is False
    assert model.get_layer("conv3_block1_2_bn").epsilon == 1e-5
    v1 = keras_resnet.ResNet50(weights=None)
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2)


def test_mixed_precision_keeps_classifier_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10)
        assert model.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
        out = model(np.zeros((1, 32, 32, 3), "float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bn_momentum_and_synchronization_reach_every_batch_norm():
    model = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10,
                                  bn_momentum=0.9, synchronized_bn=True)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 19
    assert all(l.momentum == 0.9 and l.synchronized for l in bns)


def _block_names(model):
    return [l.name[:-len("_out")] for l in model.layers
            if l.name.startswith("conv") and l.name.endswith("_out")]


@pytest.mark.parametrize("name, size", [("ResNet20", 32), ("ResNet18", 64), ("ResNet50", 64),
                                        ("ResNet50V2", 64)])
def test_zero_init_residual_makes_every_identity_block_an_identity(name, size):
    model = getattr(keras_resnet, name)(weights=None, input_shape=(size, size, 3),
                                        zero_init_residual=True)
    blocks = _block_names(model)
    names = {l.name for l in model.layers}
    taps = keras.Model(model.input, [model.get_layer(b + "_out").output for b in blocks])
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    for training in (False, True):
        outs = [keras.ops.convert_to_numpy(o) for o in taps(x, training=training)]
        identities = 0
        for prev, block, out_prev, out in zip(blocks, blocks[1:], outs, outs[1:]):
            if not {block + "_0_conv", block + "_0_pad", block + "_0_pool"} & names:
                np.testing.assert_array_equal(out, out_prev, err_msg=f"{block} after {prev}")
                identities += 1
        assert identities >= len(blocks) // 2
    assert np.abs(outs[-1]).max() > 0


def test_zero_init_residual_is_off_by_default_and_ignored_by_plain_nets():
    default = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10)
    plain = keras_resnet.Plain20(weights=None, input_shape=(32, 32, 3), classes=10,
                                 classifier_activation=None, zero_init_residual=True)
    zero = keras_resnet.ResNet20(weights=None, input_shape=(32, 32, 3), classes=10,
                                 zero_init_residual=True)
    for model, zeros in ((default, 0), (plain, 0), (zero, 9)):
        gammas = {l.name: keras.ops.convert_to_numpy(l.gamma) for l in model.layers
                  if isinstance(l, keras.layers.BatchNormalization)}
        zeroed = [n for n, g in gammas.items() if not g.any()]
        assert len(zeroed) == zeros and all(n.endswith("_2_bn") for n in zeroed)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(plain(x))
    assert np.abs(logits[0] - logits[1]).max() > 1e-3 * np.abs(logits).max() > 0


@pytest.mark.slow
def test_resnet1202_with_zero_init_residual_is_finite_in_inference_at_initialization():
    model = keras_resnet.ResNet1202(weights=None, input_shape=(32, 32, 3), classes=10,
                                    zero_init_residual=True)
    out = keras.ops.convert_to_numpy(model(np.random.rand(2, 32, 32, 3).astype("float32")))
    assert np.isfinite(out).all()
    # A float32 softmax over 10 classes sums to 1 within ~2 x 10 roundings (2.4e-6).
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
