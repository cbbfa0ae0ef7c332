"""keras-resnet: the ResNet family of He et al. (CVPR 2016) for Keras 3, from paper to phone."""

from setuptools import find_packages, setup

TRAIN = [
    "tensorflow>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources",  # tensorflow-datasets 4.9.10 imports it without declaring it
    "absl-py",
    "matplotlib",
]
# ONNX export and ONNX Runtime (export.onnx_format, export.evaluate). tf2onnx 1.16 pinned
# protobuf~=3.20, which TF 2.21 (protobuf>=6.31) cannot share; 1.17 works with protobuf 7.
ONNX = ["onnxruntime>=1.20", "tf2onnx>=1.17", "onnx>=1.17"]
EXPORT = TRAIN + [
    "tensorflow-model-optimization>=0.8.1,<0.9",
    "tf_keras>=2.21,<2.22",
    "ai-edge-litert>=2.3",
] + ONNX

setup(
    name="keras-resnet",
    version="0.1.0",
    description="ResNets for Keras 3: paper-faithful models, pretrained weights, training recipes, "
    "tf.distribute, TFLite export.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_resnet", "keras_resnet.*", "train", "train.*",
                                    "export", "export.*"]),
    package_data={"keras_resnet": ["data/*.json"]},
    # The model library needs only these (it builds under the JAX and PyTorch backends too).
    install_requires=["keras>=3.15,<4", "numpy", "h5py", "safetensors>=0.4"],
    extras_require={
        "train": TRAIN,
        "export": EXPORT,
        # MediaPipe Tasks pins absl-py~=2.3 while TFMOT 0.8.1 pins absl-py~=1.2 (it works with
        # 2.x): install it in a second step, `pip install -e ".[mobile]"`, as scripts/setup.sh
        # does, since one resolution of both fails.
        "mobile": ["mediapipe==1.2.2"],
        "test": EXPORT + ["pytest>=8", "pytest-timeout", "nbclient", "nbformat", "ipykernel",
                          "jax", "pillow", "ruff"],
        "torch": ["torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31"],
        "onnx": ONNX,
        "bench": ONNX,
    },
)
