try:
    import triton  # noqa: F401  must load before TensorFlow, or importing it later segfaults (TF 2.21)
except ImportError:
    pass


import os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    """A TFDS data dir with fashion_mnist prepared offline from Debian's files, once per
    session for every room's tests (about 20 s), or $KERAS_RESNET_TEST_DATA where it is
    prepared already."""
    from train import data

    reuse = os.environ.get("KERAS_RESNET_TEST_DATA")
    if not reuse and not os.path.isfile(
            os.path.join(data.FASHION_MNIST_SOURCE, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("needs `apt-get install dataset-fashion-mnist`")
    return data.prepare_fashion_mnist(reuse or str(tmp_path_factory.mktemp("tfds")))
