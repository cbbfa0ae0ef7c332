"""train.fused_batch_norm (TensorFlow's FusedBatchNormV3 behind keras_resnet's
FusedBatchNormalization) against keras.layers.BatchNormalization, the unfused reference."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resnet
from keras_resnet.layers import FusedBatchNormalization
from train import fused_batch_norm


def test_importing_train_steps_registers_the_kernel():
    import train.steps  # noqa: F401

    kernel = keras_resnet.layers.FUSED_TRAINING_KERNELS["tensorflow"]
    assert kernel is fused_batch_norm.fused_training_kernel


def _pair(shape, seed, momentum=0.9, epsilon=1.001e-5, **kwargs):
    """The fused layer and keras.layers.BatchNormalization with the same random weights."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    weights = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
               rng.uniform(0.5, 2.0, c)]
    layers = []
    for cls in (FusedBatchNormalization, keras.layers.BatchNormalization):
        layer = cls(momentum=momentum, epsilon=epsilon, **kwargs)
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
        layers.append(layer)
    return layers


def _train_step(layer, x, w):
    """Training-mode outputs, d(sum(y * w))/d(x, gamma, beta), and the moving statistics after."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * w)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y.numpy()] + [g.numpy() for g in grads] + \
        [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("shape", [(8, 16, 16, 32), (128, 4, 4, 16)])
def test_fused_training_equals_unfused_up_to_bessel(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, shape).astype("float32")
    w = rng.normal(0, 1, shape).astype("float32")
    fused, unfused = _pair(shape, seed=2)
    initial_var = unfused.moving_variance.numpy().copy()
    (y, dx, dg, db, mm, mv), (y0, dx0, dg0, db0, mm0, mv0) = (
        _train_step(l, x, w) for l in (fused, unfused))
    # Noise floor, measured against a float64 numpy BN on these shapes (5 seeds): max |y - y64|
    # is 6.8e-6 fused / 3.1e-6 unfused with oneDNN, 3.5e-6 / 3.1e-6 with Eigen
    # (TF_ENABLE_ONEDNN_OPTS=0), for |y| up to ~7: float32 epsilon 1.2e-7 x |y| x the few
    # roundings of a reduction over n = B*H*W. Fused vs unfused here: 3.3e-6 (oneDNN), 7.2e-7
    # (Eigen). Tolerance: the two floors' sum (1e-5), 2x.
    np.testing.assert_allclose(y, y0, atol=2e-5, rtol=0)
    # Gradients, relative to their largest entry. Floors vs float64: dx 7.5e-7 fused / 3.4e-7
    # unfused (oneDNN), 3.4e-7 / 3.4e-7 (Eigen); dgamma, dbeta (sums over n terms) 1.9e-6 /
    # 3.2e-6. Fused vs unfused here: dx 4.4e-7 / 1.4e-7, dgamma 1.2e-6 / 1.7e-6, dbeta
    # 4.3e-7 / 1.7e-6 (oneDNN / Eigen). Tolerance: 2x the floors' sum.
    for got, want, bound in ((dx, dx0, 2.5e-6), (dg, dg0, 1e-5), (db, db0, 1e-5)):
        np.testing.assert_allclose(got, want, atol=bound * np.abs(want).max(), rtol=0)
    # Moving mean, the same update in both: floors 2.5e-6 / 1.5e-6 relative; here 5.3e-7
    # (oneDNN), 0 (Eigen). Tolerance: 2x the floors' sum.
    np.testing.assert_allclose(mm, mm0, rtol=0, atol=8e-6 * np.abs(mm0).max())
    # Moving variance: the fused kernel's batch variance carries Bessel's n/(n-1) (1 + 4.9e-4
    # for n = 2048, 1 + 3.9e-4 for 8 * 16 * 16: ~40x the tolerance, so it must be there).
    # Relative difference after that factor: 1.1e-6 (oneDNN), 3.7e-7 (Eigen); floors 5e-7 /
    # 2.7e-7 on the stored variance, x ~3 to isolate the batch term. Tolerance 1e-5.
    n = np.prod(shape[:3])
    batch_var, batch_var0 = ((v - 0.9 * initial_var) / 0.1 for v in (mv, mv0))
    np.testing.assert_allclose(batch_var, batch_var0 * n / (n - 1), rtol=1e-5)


def test_fused_inference_is_the_parent_bitwise():
    fused, unfused = _pair((4, 8, 8, 16), seed=3)
    x = np.random.default_rng(4).normal(1, 2, (4, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(fused(x, training=False).numpy(),
                                  unfused(x, training=False).numpy())
    fused.trainable = unfused.trainable = False  # frozen: inference statistics even in training
    np.testing.assert_array_equal(fused(x, training=True).numpy(),
                                  unfused(x, training=True).numpy())


def _ops_of(layer, x, training):
    fn = tf.function(lambda t: layer(t, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(x.shape)).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("case, fused", [
    ("nhwc_training", True), ("inference", False), ("channels_first", False),
    ("bfloat16", False), ("renorm", False), ("rank2", False),
])
def test_fused_path_is_taken_only_where_it_applies(case, fused):
    shape = {"channels_first": (2, 16, 4, 4), "rank2": (8, 16)}.get(case, (2, 4, 4, 16))
    kwargs = {"channels_first": dict(axis=1), "renorm": dict(renorm=True),
              "bfloat16": dict(dtype="mixed_bfloat16")}.get(case, {})
    layer = FusedBatchNormalization(**kwargs)
    layer.build(shape)
    ops = _ops_of(layer, np.zeros(shape, "float32"), training=case != "inference")
    assert ("FusedBatchNormV3" in ops) is fused, sorted(ops)


DETERMINISM = textwrap.dedent("""
    import numpy as np, tensorflow as tf, keras, keras_resnet
    import train.fused_batch_norm  # registers the kernel, as train.steps does
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype("float32")
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = keras_resnet.ResNet(8, weights=None, input_shape=(32, 32, 3), classes=4)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        losses = [float(model.train_on_batch(x, np.arange(8) % 4)) for _ in range(2)]
        runs.append((losses, [w.copy() for w in model.get_weights()]))
    assert runs[0][0] == runs[1][0], runs
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    print("deterministic", runs[0][0])
""")


def test_fused_training_runs_under_op_determinism():
    """enable_op_determinism() raises for ops without a deterministic kernel; FusedBatchNormV3
    and its gradient on CPU have one, and two runs are bitwise equal."""
    proc = subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0 and "deterministic" in proc.stdout, proc.stderr[-3000:]
