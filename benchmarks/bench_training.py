"""Training throughput of the one training loop against a plain PyTorch loop, side by side.

    python benchmarks/bench_training.py                  # 3 interleaved rounds, ~3 minutes
    python benchmarks/bench_training.py --rounds=5 --steps=40

CIFAR ResNet-20 (option A shortcuts), batch 128, 32x32x3 synthetic batches, SGD with
momentum 0.9 and weight decay, float32: ours is `train.steps.Steps` on the keras_resnet model
that `python -m train` builds (fused BatchNorm, oneDNN kernels, one inter-op thread); the peer
is a plain PyTorch eager loop (channels_last) of the same architecture, written below. Each
measurement runs in a fresh process, the two frameworks alternate, and the ratio of medians
ours / PyTorch is printed with the CPU's instruction sets (figures move 10-20% between runs on
a shared machine; the ratio, measured in one run, is what to compare). mixed_bfloat16 is
measured too where the CPU has BF16 instructions. GPU (skipped without one): ResNet-50 (batch
256, 224x224x3) in float32 and in mixed_float16 with XLA.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def ours(model_name, shape, classes, batch, policy, jit, steps):
    """images/s of train.steps.Steps after 3 warm-up steps (run in its own process)."""
    from train import strategies

    strategies.make_deterministic(True)
    import keras
    import numpy as np
    import tensorflow as tf

    from train import recipes, steps as steps_lib, views
    from train import model as model_lib

    strategy = strategies.make_strategy("one_device")
    recipe = recipes.resolve("paper_cifar", model=model_name, batch_size=batch,
                             mixed_precision=policy, xla="on" if jit else "off")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch,) + shape).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    keras.config.set_dtype_policy(strategies.precision_policy(policy, strategy))
    with strategy.scope():
        model = model_lib.build_model(recipe, views.View(*shape), np.full(shape[-1], 120.0),
                                      classes)
        optimizer = steps_lib.make_optimizer(recipe, keras.config.dtype_policy().name)
        optimizer.build(model.trainable_variables)
    compiled = steps_lib.Steps(model, optimizer, strategy, recipe, classes, jit=jit)
    iterator = iter(ds)
    compiled.train(iterator, 3)  # trace, compile, warm up
    start = time.perf_counter()
    compiled.train(iterator, steps)
    return steps * batch / (time.perf_counter() - start)


def pytorch(batch, steps, threads):
    """images/s of a plain PyTorch eager loop of the same ResNet-20 (channels_last)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(threads)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.extra:  # option A: zero-padded channels
                shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
            return F.relu(y + shortcut)

    blocks, cin = [], 16
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            blocks.append(Block(cin, filters, stride if i == 0 else 1))
            cin = filters
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = (torch.rand(batch, 3, 32, 32) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def _worker(args):
    if args.worker == "torch":
        rate = pytorch(128, args.steps, os.cpu_count() or 1)
    elif args.worker == "resnet50":
        rate = ours("resnet50", (224, 224, 3), 1000, 256, args.policy, args.xla, args.steps)
    else:
        rate = ours("resnet20", (32, 32, 3), 10, 128, args.policy, False, args.steps)
    print("RATE", rate)


def _measure(worker, steps, **extra):
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={worker}", f"--steps={steps}"]
    cmd += [f"--{k}={v}" for k, v in extra.items()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
    return float(out.stdout.split("RATE")[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu_steps", type=int, default=50)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--xla", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    from train import strategies

    cpu = strategies.cpu_features()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1 (set by train)")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; TF_ENABLE_ONEDNN_OPTS={onednn}")
    policies = ["float32"] + (["mixed_bfloat16"] if strategies.cpu_supports_bf16() else [])
    rates = {name: [] for name in policies + ["pytorch"]}
    for _ in range(args.rounds):
        for policy in policies:
            rates[policy].append(_measure("ours", args.steps, policy=policy))
        rates["pytorch"].append(_measure("torch", args.steps))
    median = {k: statistics.median(v) for k, v in rates.items()}
    for name, values in rates.items():
        label = "PyTorch eager, float32" if name == "pytorch" else f"ours, {name}"
        print(f"ResNet-20 batch 128, {label:>24}: {median[name]:7.1f} images/s "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    results = {"cpu": cpu, "images_per_sec": {k: round(v, 1) for k, v in median.items()},
               "ours_over_pytorch_float32": round(median["float32"] / median["pytorch"], 3)}
    print(f"ours / PyTorch (float32): {results['ours_over_pytorch_float32']:.2f}")
    if "mixed_bfloat16" in median:
        results["bf16_over_fp32"] = round(median["mixed_bfloat16"] / median["float32"], 3)
        print(f"ours mixed_bfloat16 / float32: {results['bf16_over_fp32']:.2f} (BF16 CPU)")
    else:
        print("mixed_bfloat16: skipped (this CPU has no BF16 instructions)")
    _gpu_rows(args, results)
    print(json.dumps(results))


def _gpu_rows(args, results):
    import train

    tf = train.import_tensorflow_quietly()

    if not tf.config.list_physical_devices("GPU"):
        print("ResNet-50 mixed precision + XLA: skipped (no GPU).")
        return
    for policy, jit in (("float32", 0), ("mixed_float16", 1)):
        rate = _measure("resnet50", args.gpu_steps, policy=policy, xla=jit)
        results[f"resnet50_{policy}{'_xla' if jit else ''}_images_per_sec"] = round(rate, 1)
        print(f"ResNet-50 batch 256 {policy}{' + XLA' if jit else ''}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
