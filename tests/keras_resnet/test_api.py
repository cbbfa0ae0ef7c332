"""The public API: keras.applications' signatures, and the one architecture-name resolver."""

import inspect

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import variants

NAMED = [name for name in dir(keras_resnet) if name.startswith(("ResNet", "Plain"))
         and (name[-1].isdigit() or name.endswith("V2"))]
EXTRAS = ("include_preprocessing", "variant", "shortcut", "synchronized_bn", "bn_momentum",
          "zero_init_residual")
REFERENCE = {"ResNet50": keras.applications.ResNet50, "ResNet101": keras.applications.ResNet101,
             "ResNet152": keras.applications.ResNet152, "ResNet50V2": keras.applications.ResNet50V2,
             "ResNet101V2": keras.applications.ResNet101V2,
             "ResNet152V2": keras.applications.ResNet152V2}


def _positional(fn):
    return [p for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def test_every_named_function_is_listed():
    assert len(NAMED) == 25 and "ResNet1202" in NAMED and "Plain20" in NAMED
    assert "ResNet" not in NAMED


@pytest.mark.parametrize("name", NAMED)
def test_signature_is_keras_applications_order_then_keyword_only_extras(name):
    ours = getattr(keras_resnet, name)
    reference = REFERENCE.get(name, keras.applications.ResNet50)  # same order for every ResNet
    theirs = inspect.signature(reference).parameters
    params = inspect.signature(ours).parameters.values()
    assert [p.name for p in _positional(ours)] == list(theirs)
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in theirs.values())
    assert [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY] == list(EXTRAS)
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params)
    defaults = {p.name: p.default for p in params}
    arch = keras_resnet.ARCHS[name.lower()]
    assert defaults["weights"] == arch.weights and defaults["name"] == name.lower()
    assert defaults["shortcut"] == arch.shortcut
    for key in ("include_top", "input_tensor", "input_shape", "pooling", "classes",
                "classifier_activation"):
        assert defaults[key] == theirs[key].default, key
    if name in REFERENCE:
        assert defaults["weights"] == theirs["weights"].default == "imagenet"
        assert defaults["name"] == theirs["name"].default
    assert name in ours.__doc__ and "Keyword-only" in ours.__doc__


def test_positional_call_equals_keyword_call_and_keras_applications():
    positional = keras_resnet.ResNet50(False, None, None, (64, 64, 3), "avg")
    keyword = keras_resnet.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3),
                                    pooling="avg")
    reference = keras.applications.ResNet50(False, None, None, (64, 64, 3), "avg")
    assert positional.output.shape == keyword.output.shape == reference.output.shape == (None, 2048)
    assert positional.count_params() == reference.count_params()
    small = keras_resnet.ResNet20(True, None, None, (32, 32, 3), None, 10, None, "mine")
    assert small.name == "mine" and small.output.shape == (None, 10)
    assert small.get_layer("predictions").get_config()["activation"] == "linear"
    with pytest.raises(TypeError):
        keras_resnet.ResNet20(True, None, None, (32, 32, 3), None, 10, None, "mine", False)


def test_create_and_resnet_take_the_same_positional_order():
    assert [p.name for p in _positional(keras_resnet.create)][1:] == \
        list(inspect.signature(keras.applications.ResNet50).parameters)
    assert [p.name for p in _positional(keras_resnet.ResNet)][1:] == \
        list(inspect.signature(keras.applications.ResNet50).parameters)
    model = keras_resnet.create("resnet8", True, None, None, (32, 32, 3), None, 10)
    assert model.name == "resnet8" and model.output.shape == (None, 10)


@pytest.mark.parametrize("name, depth, n, shortcut", [
    ("resnet8", 8, 1, "A"), ("Plain14", 14, 2, None), ("RESNET26", 26, 4, "A"),
    ("resnet20", 20, 3, "A"), ("resnet50_cifar", 50, 8, "A"), ("plain152_cifar", 152, 25, None),
])
def test_resolve_cifar_depths(name, depth, n, shortcut):
    arch = keras_resnet.resolve(name)
    assert arch.stem == "cifar" and arch.shortcut == shortcut and arch.block == "basic"
    assert [s[1] for s in arch.stages] == [n, n, n] and 6 * n + 2 == depth
    assert keras_resnet.resolve(arch.name) == arch


def test_resolve_named_rows_is_pure():
    before = dict(keras_resnet.ARCHS)
    for key, row in before.items():
        assert keras_resnet.resolve(key) is row and row.name == key
        assert keras_resnet.resolve(key.upper()) is row
    assert keras_resnet.resolve("resnet50").stem == "imagenet"  # 50 = 6n+2 too: ImageNet wins
    keras_resnet.resolve("resnet8")
    keras_resnet.ResNet(14, weights=None, input_shape=(32, 32, 3), classes=10)
    keras_resnet.ResNet(50, cifar=True, weights=None, input_shape=(32, 32, 3), classes=10)
    assert keras_resnet.ARCHS == before


def test_resnet_depth_uses_the_right_family():
    cifar50 = keras_resnet.ResNet(50, cifar=True, weights=None, input_shape=(32, 32, 3), classes=10)
    assert cifar50.name == "resnet50_cifar"
    assert "conv5_block1_out" not in [l.name for l in cifar50.layers]
    assert keras_resnet.ResNet(50, weights=None).name == "resnet50"
    plain8 = keras_resnet.ResNet(8, plain=True, weights=None, input_shape=(32, 32, 3), classes=10)
    assert plain8.name == "plain8"
    assert not any(isinstance(l, keras.layers.Add) for l in plain8.layers)


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "plain", "resnet18_cifar", "vgg16",
                                  "resnet020", "resnet-20", "resnet20v2"])
def test_resolve_unknown_names_say_value_and_choices(name):
    with pytest.raises(ValueError, match=rf"Unknown architecture '{name}'.*'resnet50'.*6n\+2"):
        keras_resnet.resolve(name)


def test_resolve_rejects_non_strings():
    with pytest.raises(ValueError, match=r"must be a string.*received 20 \(int\)"):
        keras_resnet.resolve(20)
    with pytest.raises(ValueError, match=r"`depth` must be an int.*'20'"):
        keras_resnet.ResNet("20")


def test_six_n_plus_two_rule_lives_in_one_function():
    source = inspect.getsource(variants)
    assert source.count("% 6") == 1 and "% 6" in inspect.getsource(variants.cifar_arch)


def test_create_accepts_any_resolvable_name_with_trainer_arguments():
    x = keras.Input((32, 32, 3))
    model = keras_resnet.create("Plain8", weights=None, input_tensor=x, classes=4,
                                synchronized_bn=False, bn_momentum=0.9, zero_init_residual=True,
                                shortcut=None)
    out = keras.ops.convert_to_numpy(model(np.zeros((1, 32, 32, 3), "float32")))
    assert out.shape == (1, 4)
