"""Training throughput of the one training loop (`train.loop.Steps`), in images/s.

    python benchmarks/bench_training.py                 # ResNet-20, float32 vs mixed_bfloat16
    python benchmarks/bench_training.py --steps=100 --rounds=3

CPU: CIFAR ResNet-20 (batch 128, 32x32x3) in float32 and in mixed_bfloat16, interleaved
rounds, and their ratio (figures move 10-20% between runs on a shared machine: compare the
two policies side by side, as a ratio). GPU (skipped without one): ResNet-50 (batch 256,
224x224x3) in float32 and in mixed_float16 with XLA.

Synthetic batches (one batch, repeated) feed the loop's own compiled steps, so the figure is
the model and the loop, not the input pipeline.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train import data, loop, recipes, strategies  # noqa: E402


def images_per_sec(model_name, shape, classes, batch, policy, jit, steps, strategy):
    """Trains `steps` steps (after 3 warm-up steps) and returns images/s."""
    recipe = recipes.resolve("paper_cifar", model=model_name, batch_size=batch,
                             mixed_precision=policy, xla="on" if jit else "off")
    info = data.DatasetInfo(name="synthetic", num_classes=classes, image_shape=shape,
                            num_train=None, num_test=None, class_names=(),
                            mean=np.full(shape, 120.0, np.float32))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch,) + shape).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(strategies.precision_policy(policy, strategy))
    try:
        with strategy.scope():
            model = loop.build_model(recipe, info)
            optimizer = loop.make_optimizer(recipe, keras.config.dtype_policy().name)
            optimizer.build(model.trainable_variables)
        steps_fn = loop.Steps(model, optimizer, strategy, recipe, classes, jit=jit)
        iterator = iter(ds)
        steps_fn.train(iterator, 3)  # trace, compile, warm up
        start = time.perf_counter()
        steps_fn.train(iterator, steps)
        return steps * batch / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy(previous)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpu_steps", type=int, default=50)
    args = parser.parse_args()
    strategy = strategies.make_strategy("one_device")
    kind = strategies.device_kind(strategy)
    results = {"device": kind, "cpu_bf16": strategies.cpu_supports_bf16()}

    rates = {"float32": [], "mixed_bfloat16": []}
    for _ in range(args.rounds):
        for policy in rates:
            rates[policy].append(images_per_sec("resnet20", (32, 32, 3), 10, 128, policy,
                                                False, args.steps, strategy))
    for policy, values in rates.items():
        results[f"resnet20_{policy}_images_per_sec"] = round(float(np.median(values)), 1)
        print(f"ResNet-20 batch 128 {policy:>15}: {np.median(values):7.1f} images/s "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    ratio = np.median(rates["mixed_bfloat16"]) / np.median(rates["float32"])
    results["resnet20_bf16_over_fp32"] = round(float(ratio), 3)
    print(f"mixed_bfloat16 / float32: {ratio:.2f}x")

    if kind == "gpu":
        for policy, jit in (("float32", False), ("mixed_float16", True)):
            rate = images_per_sec("resnet50", (224, 224, 3), 1000, 256, policy, jit,
                                  args.gpu_steps, strategy)
            results[f"resnet50_{policy}{'_xla' if jit else ''}_images_per_sec"] = round(rate, 1)
            print(f"ResNet-50 batch 256 {policy}{' + XLA' if jit else ''}: {rate:.1f} images/s")
    else:
        print("ResNet-50 mixed precision + XLA: skipped (no GPU).")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
