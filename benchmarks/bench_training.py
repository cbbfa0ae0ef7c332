"""Training throughput of the one training loop against a plain PyTorch loop, side by side.

    python benchmarks/bench_training.py                  # both suites, 3 interleaved rounds
    python benchmarks/bench_training.py --suite=cifar --rounds=5 --steps=40
    python benchmarks/bench_training.py --suite=finetune --finetune_models=resnet18 --rounds=3

Suite 'cifar': CIFAR ResNet-20 (option A shortcuts), batch 128, 32x32x3 synthetic batches, SGD
with momentum 0.9 and weight decay, float32: ours is `train.steps.Steps` on the keras_resnet
model that `python -m train` builds (fused BatchNorm, oneDNN kernels, one inter-op thread); the
peer a plain PyTorch eager loop (channels_last) of the same architecture, written below; ours in
mixed_bfloat16 too where the CPU has BF16 instructions (about 3 minutes).

Suite 'finetune': a fine-tuning step on 224x224x3 photos (issue 21), batch 32, 10 classes, per
model (`--finetune_models`: ResNet-18, ResNet-50), phase ('head': only the classifier trains;
'whole': all but BatchNorm; BatchNorm frozen, in inference mode, in both) and precision
(`--finetune_precisions`: float32, and mixed_bfloat16 where the CPU has BF16 instructions, as
mixed_precision='auto' picks). Ours: `train.steps.Steps` on `train.model.build_model`'s network
with the `finetune` recipe (from scratch: no weight files here; it sets each phase's trainable
layers, `train.steps.set_phase`), its mixed_precision the precision, under that Keras dtype policy
and `make_optimizer(recipe, policy)`. The peer: torchvision's resnet18/resnet50 in channels_last,
`requires_grad=False` on the frozen parameters, BatchNorm in `eval()`, the recipe's Nesterov SGD,
weight decay and label smoothing; in mixed_bfloat16 its forward pass and loss under
`torch.autocast("cpu", dtype=torch.bfloat16)` (float32 master weights, as Keras' mixed policy).
Both train the same parameters (ResNet-18: 5,130 in the head phase, 11,172,042 whole-net). One
row per (model, phase, precision) gives ours / PyTorch at that precision. The default (2 models x
2 phases x 2 precisions x 2 frameworks x 3 rounds, each a fresh process; ResNet-50's whole-net
step takes seconds on 2 cores) runs for tens of minutes (not timed on a quiet machine);
`--finetune_models=resnet18`, `--finetune_precisions=float32` or `--rounds=1` is shorter.

Each measurement runs in a fresh process, the two frameworks alternate, and the ratio of medians
ours / PyTorch is printed beside the CPU's model name and instruction sets (figures move 10-20%
between runs on a shared machine; the ratio, measured in one run, is what to compare). Only a
quiet machine gives fair ratios, in every precision: under load PyTorch's OpenMP threads spin
waiting for each other (at load average 7 on 2 cores a ResNet-18 forward and backward pass at
batch 4 took 9-10 s with 2 threads, 1.7-2.2 s with 1, 1.5-3.8 s with 2 and
OMP_WAIT_POLICY=PASSIVE), so ours / PyTorch comes out several times too high. GPU (skipped
without one): ResNet-50 (batch 256, 224x224x3) in float32 and in mixed_float16 with XLA.
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


def images_per_s(run, warmup, steps, batch):
    """images/s of `run(steps)` (`steps` batches of `batch`) after `run(warmup)`."""
    run(warmup)
    start = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - start)


def build_network(recipe, shape, mean, classes):
    """`train.model.build_model`'s network for (H, W, C) inputs (also when it loaded weights)."""
    import keras

    from train import model as model_lib
    from train import views

    built = model_lib.build_model(recipe, views.View(*shape), mean, classes)
    return built if isinstance(built, keras.Model) else built.model


def ours(model_name, shape, classes, batch, policy, jit, steps):
    """images/s of train.steps.Steps after 3 warm-up steps (run in its own process)."""
    from train import strategies

    strategies.make_deterministic(True)
    import keras
    import numpy as np
    import tensorflow as tf

    from train import recipes
    from train import steps as steps_lib

    strategy = strategies.make_strategy("one_device")
    recipe = recipes.resolve("paper_cifar", model=model_name, batch_size=batch,
                             mixed_precision=policy, xla="on" if jit else "off")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch,) + shape).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    keras.config.set_dtype_policy(strategies.precision_policy(policy, strategy))
    with strategy.scope():
        model = build_network(recipe, shape, np.full(shape[-1], 120.0), classes)
        optimizer = steps_lib.make_optimizer(recipe, keras.config.dtype_policy().name)
        optimizer.build(model.trainable_variables)
    compiled = steps_lib.Steps(model, optimizer, strategy, recipe, classes, jit=jit)
    return images_per_s(lambda n: compiled.train(iterator, n), 3, steps, batch)


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

    def run(n):
        for _ in range(n):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    return images_per_s(run, 3, steps, batch)


def finetune_recipe(model_name, phase, batch, precision="float32"):
    """The `finetune` recipe from scratch (no weight files here), its schedule in steps, in
    `phase` for every step a benchmark runs, its mixed_precision `precision`."""
    from train import recipes

    head = 10**6 if phase == "head" else 0
    return recipes.resolve("finetune", model=model_name, weights="none", batch_size=batch,
                           mixed_precision=precision, xla="off", epochs=0.0, head_epochs=0.0,
                           warmup_epochs=0.0, warmup_steps=0, head_steps=head,
                           steps=head + 10**6)


def ours_finetune(model_name, phase, batch, steps, precision, classes=10, size=224):
    """images/s of train.steps.Steps in one fine-tuning phase and precision (own process)."""
    from train import strategies

    strategies.make_deterministic(True)
    import keras
    import numpy as np
    import tensorflow as tf

    from train import data
    from train import steps as steps_lib

    strategy = strategies.make_strategy("one_device")
    recipe = finetune_recipe(model_name, phase, batch, precision)
    policy = strategies.precision_policy(recipe.mixed_precision, strategy)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    keras.config.set_dtype_policy(policy)
    with strategy.scope():
        model = build_network(recipe, (size, size, 3),
                              np.asarray(data.IMAGENET_RGB_MEAN, np.float32), classes)
        optimizer = steps_lib.make_optimizer(recipe, policy)
    compiled = steps_lib.Steps(model, optimizer, strategy, recipe, classes)
    if compiled.phase_at(0) != phase:
        raise RuntimeError(f"the recipe starts in phase {compiled.phase_at(0)!r}, not {phase!r}.")
    return images_per_s(lambda n: compiled.train(iterator, n), 2, steps, batch)


def pytorch_finetune(model_name, phase, batch, steps, threads, precision, classes=10, size=224):
    """images/s of a plain PyTorch loop fine-tuning torchvision's `model_name` in `phase`
    (channels_last, frozen parameters requires_grad=False, BatchNorm in eval mode); in
    mixed_bfloat16 the forward pass and loss under CPU autocast to bfloat16."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(num_classes=classes)
    model = model.to(memory_format=torch.channels_last).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            module.requires_grad_(False)
    if phase == "head":
        model.requires_grad_(False)
        model.fc.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = (torch.rand(batch, 3, size, size) * 255).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))
    if precision not in FINETUNE_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {FINETUNE_PRECISIONS}.")

    def run(n):
        for _ in range(n):
            optimizer.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "mixed_bfloat16"):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            loss.backward()
            optimizer.step()

    return images_per_s(run, 2, steps, batch)


def _worker(args):
    if args.worker == "torch":
        rate = pytorch(128, args.steps, os.cpu_count() or 1)
    elif args.worker == "resnet50":
        rate = ours("resnet50", (224, 224, 3), 1000, 256, args.policy, args.xla, args.steps)
    elif args.worker == "finetune_ours":
        rate = ours_finetune(args.model, args.phase, args.batch, args.steps, args.policy,
                             args.classes, args.image_size)
    elif args.worker == "finetune_torch":
        rate = pytorch_finetune(args.model, args.phase, args.batch, args.steps,
                                os.cpu_count() or 1, args.policy, args.classes, args.image_size)
    else:
        rate = ours("resnet20", (32, 32, 3), 10, 128, args.policy, False, args.steps)
    print("RATE", rate)


def _measure(worker, steps, **extra):
    """images/s of one `worker` measurement in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={worker}", f"--steps={steps}"]
    cmd += [f"--{k}={v}" for k, v in extra.items()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"benchmark worker {' '.join(cmd[2:])} failed (exit status "
                           f"{out.returncode}):\n{out.stderr[-3000:]}")
    return float(out.stdout.split("RATE")[-1])


def finetune_rate(framework, model_name, phase, precision="float32", *, batch=32, steps=10,
                  classes=10, size=224):
    """images/s of one fine-tuning step measurement ('ours' or 'torch') in a fresh process."""
    return _measure(f"finetune_{framework}", steps, model=model_name, phase=phase, batch=batch,
                    classes=classes, image_size=size, policy=precision)


def cpu_line():
    """The CPU's model name, instruction sets and cores, and the oneDNN setting."""
    from train import strategies

    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1 on x86-64 (train.console)")
    return (f"{strategies.cpu_features()}, {os.cpu_count()} cores; "
            f"TF_ENABLE_ONEDNN_OPTS={onednn}")


SUITES = ("cifar", "finetune")
FINETUNE_PRECISIONS = ("float32", "mixed_bfloat16")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="cifar,finetune",
                        help="comma-separated suites to run: cifar, finetune")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu_steps", type=int, default=50)
    parser.add_argument("--finetune_models", default="resnet18,resnet50")
    parser.add_argument("--phases", default="head,whole", help="fine-tuning phases to run")
    parser.add_argument("--finetune_batch", type=int, default=32)
    parser.add_argument("--finetune_steps", type=int, default=10,
                        help="timed fine-tuning steps per measurement (after 2 warm-up steps)")
    parser.add_argument("--finetune_precisions", default=None,
                        help="comma-separated subset of float32,mixed_bfloat16 (default both "
                        "where the CPU has BF16 instructions, else float32)")
    for name, default in (("worker", None), ("policy", "float32"), ("xla", 0),
                          ("model", "resnet18"), ("phase", "whole"), ("batch", 32),
                          ("classes", 10), ("image_size", 224)):  # a worker's, from _measure
        parser.add_argument(f"--{name}", default=default, help=argparse.SUPPRESS,
                            type=type(default) if default is not None else str)
    args = parser.parse_args()
    suites = [x for x in args.suite.split(",") if x]
    bad = [x for x in suites if x not in SUITES]
    if bad or not suites:
        parser.error(f"--suite={args.suite!r}: use a comma-separated subset of {SUITES}.")
    args.suites = suites
    precisions = (args.finetune_precisions or "float32").split(",")
    if any(x not in FINETUNE_PRECISIONS for x in precisions):
        parser.error(f"--finetune_precisions={args.finetune_precisions!r}: use a "
                     f"comma-separated subset of {FINETUNE_PRECISIONS}.")
    return args


def main():
    args = _parse_args()
    from train import console

    console.prefer_onednn()  # before TensorFlow's import, as the command lines do
    if args.worker:  # PyTorch workers never import TensorFlow (triton after TF segfaults)
        return _worker(args)
    console.import_tensorflow_quietly()
    from train import strategies

    cpu = cpu_line()
    print(f"CPU: {cpu}")
    results = {"cpu": strategies.cpu_features()}
    if "cifar" in args.suites:
        _cifar_rows(args, results)
    if "finetune" in args.suites:
        _finetune_rows(args, results, cpu)
    _gpu_rows(args, results)
    print(json.dumps(results))


def _rounds(values):
    return ", ".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values)


def _cifar_rows(args, results):
    from train import strategies

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
              f"(rounds: {_rounds(values)})")
    results["images_per_sec"] = {k: round(v, 1) for k, v in median.items()}
    results["ours_over_pytorch_float32"] = round(median["float32"] / median["pytorch"], 3)
    print(f"ours / PyTorch (float32): {results['ours_over_pytorch_float32']:.2f}")
    if "mixed_bfloat16" in median:
        results["bf16_over_fp32"] = round(median["mixed_bfloat16"] / median["float32"], 3)
        print(f"ours mixed_bfloat16 / float32: {results['bf16_over_fp32']:.2f} (BF16 CPU)")
    else:
        print("mixed_bfloat16: skipped (this CPU has no BF16 instructions)")


def _finetune_rows(args, results, cpu):
    """Interleaved rounds of (model, phase, precision) x (ours, PyTorch): medians, ratios."""
    from train import strategies
    from train.steps import PHASES

    models = [m for m in args.finetune_models.split(",") if m]
    phases = [p for p in args.phases.split(",") if p]
    if not phases or any(p not in PHASES for p in phases):
        raise SystemExit(f"--phases={args.phases!r}: use a comma-separated subset of {PHASES}.")
    default = "float32,mixed_bfloat16" if strategies.cpu_supports_bf16() else "float32"
    precisions = (args.finetune_precisions or default).split(",")
    cases = [(m, p, x) for m in models for p in phases for x in precisions]
    rates = {(case, f): [] for case in cases for f in ("ours", "torch")}
    size, batch = 224, args.finetune_batch
    for _ in range(args.rounds):
        for case, framework in rates:
            rates[case, framework].append(finetune_rate(
                framework, *case, batch=batch, steps=args.finetune_steps, size=size))
    rows = {}
    for case in cases:
        ours_m, torch_m = (statistics.median(rates[case, f]) for f in ("ours", "torch"))
        label = f"{case[0]} fine-tune {case[1]:>5} {case[2]:>14}, {size}px batch {batch}"
        print(f"{label}: ours {ours_m:6.1f} images/s (rounds: {_rounds(rates[case, 'ours'])}), "
              f"PyTorch {torch_m:6.1f} (rounds: {_rounds(rates[case, 'torch'])})")
        print(f"{label}: ours / PyTorch = {ours_m / torch_m:.2f} on {cpu}")
        rows["_".join(case)] = {"ours": round(ours_m, 2), "pytorch": round(torch_m, 2),
                                "ours_over_pytorch": round(ours_m / torch_m, 3)}
    results["finetune_224"] = {"batch": batch, "rounds": args.rounds, "steps": args.finetune_steps,
                               "precisions": precisions, "rows": rows}


def _gpu_rows(args, results):
    from train import console

    tf = console.import_tensorflow_quietly()
    if not tf.config.list_physical_devices("GPU"):
        print("ResNet-50 mixed precision + XLA: skipped (no GPU).")
        return
    for policy, jit in (("float32", 0), ("mixed_float16", 1)):
        rate = _measure("resnet50", args.gpu_steps, policy=policy, xla=jit)
        results[f"resnet50_{policy}{'_xla' if jit else ''}_images_per_sec"] = round(rate, 1)
        print(f"ResNet-50 batch 256 {policy}{' + XLA' if jit else ''}: {rate:.1f} images/s")


if __name__ == "__main__":
    main()
