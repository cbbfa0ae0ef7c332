"""keras_resnet: the ResNet family of He et al. (CVPR 2016) for Keras 3.

    import keras_resnet
    model = keras_resnet.ResNet50(weights="imagenet")
    x = keras_resnet.preprocess_input(images, mode="caffe")
    keras_resnet.decode_predictions(model.predict(x))

    arch = keras_resnet.resolve("resnet8")       # any ARCHS key, or resnetN/plainN, N = 6n+2
    model = keras_resnet.create("resnet8", weights=None, input_shape=(32, 32, 3), classes=10)

    pre = keras_resnet.resolve_pretrained("resnet18", "imagenet")   # transfer learning
    model = keras_resnet.create("resnet18", weights=None, variant=pre.variant, classes=5)
    report = keras_resnet.load_pretrained(model, pre)               # new head left at init
"""

from keras_resnet import weights
from keras_resnet.analysis import count_multiply_adds, feature_extractor, stage_names
from keras_resnet.builder import build_resnet
from keras_resnet.layers import FusedBatchNormalization, ImageNormalization, ZeroPadShortcut
from keras_resnet.preprocessing import Normalization, decode_predictions, preprocess_input
from keras_resnet.variants import (
    ARCHS,
    Arch,
    Plain18,
    Plain20,
    Plain32,
    Plain34,
    Plain44,
    Plain50,
    Plain56,
    Plain101,
    Plain110,
    Plain152,
    Plain1202,
    ResNet,
    ResNet18,
    ResNet20,
    ResNet32,
    ResNet34,
    ResNet44,
    ResNet50,
    ResNet50V2,
    ResNet56,
    ResNet101,
    ResNet101V2,
    ResNet110,
    ResNet152,
    ResNet152V2,
    ResNet1202,
    create,
    resolve,
)
from keras_resnet.weights.transfer import (
    PretrainedWeights,
    TransferReport,
    load_pretrained,
    resolve_pretrained,
)

__version__ = "0.1.0"

__all__ = [
    # models: keras.applications' signatures, one function per named row, and any depth
    "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152",
    "ResNet50V2", "ResNet101V2", "ResNet152V2",
    "ResNet20", "ResNet32", "ResNet44", "ResNet56", "ResNet110", "ResNet1202",
    "Plain18", "Plain34", "Plain50", "Plain101", "Plain152",
    "Plain20", "Plain32", "Plain44", "Plain56", "Plain110", "Plain1202",
    "ResNet", "create", "resolve", "ARCHS", "Arch", "build_resnet",
    # layers
    "FusedBatchNormalization", "ImageNormalization", "ZeroPadShortcut",
    # inputs and outputs
    "Normalization", "decode_predictions", "preprocess_input",
    # weights and transfer learning
    "weights", "PretrainedWeights", "TransferReport", "load_pretrained", "resolve_pretrained",
    # analysis
    "count_multiply_adds", "feature_extractor", "stage_names",
    "__version__",
]
