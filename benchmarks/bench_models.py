"""keras_resnet.ResNet50 vs keras.applications.ResNet50 inference, side by side in one run.

Prints batch-1 and batch-32 latency of both (same input, same weights, compiled tf.function
calls, interleaved rounds, median), their ratio (target <= 1.05), and the achieved GFLOP/s
against this machine's measured float32 matmul peak.

    python benchmarks/bench_models.py [--rounds 7] [--model resnet50]
"""

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_resnet  # noqa: E402

PAIRS = {
    "resnet50": (keras_resnet.ResNet50, keras.applications.ResNet50),
    "resnet101": (keras_resnet.ResNet101, keras.applications.ResNet101),
    "resnet50v2": (keras_resnet.ResNet50V2, keras.applications.ResNet50V2),
}


def matmul_peak_gflops(n=2048, repeats=5):
    """Best float32 matmul rate of TensorFlow's own kernels on this machine."""
    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    matmul = tf.function(tf.linalg.matmul)
    matmul(a, b).numpy()
    best = min(_timed(lambda: matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", choices=sorted(PAIRS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()

    ours_fn, ref_fn = PAIRS[args.model]
    ref = ref_fn(weights=None)
    ours = ours_fn(weights=None)
    ours.set_weights(ref.get_weights())
    macs = keras_resnet.count_multiply_adds(ours)
    peak = matmul_peak_gflops()
    print(f"{args.model}: {macs / 1e9:.2f} G multiply-adds per image; "
          f"matmul peak {peak:.0f} GFLOP/s on {os.cpu_count()} cores")
    print(f"{'batch':>5} {'keras.applications':>19} {'keras_resnet':>13} {'ratio':>6} "
          f"{'GFLOP/s':>8} {'of peak':>7}")
    for batch in (int(b) for b in args.batches.split(",")):
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)), tf.float32)
        fns = {name: tf.function(lambda x, m=m: m(x, training=False)) for name, m in
               (("ref", ref), ("ours", ours))}
        # Warm-up, and the same result.
        np.testing.assert_allclose(fns["ours"](x), fns["ref"](x), atol=1e-5)
        times = {"ref": [], "ours": []}
        for _ in range(args.rounds):
            for name in ("ref", "ours") if _ % 2 == 0 else ("ours", "ref"):
                times[name].append(_timed(lambda: fns[name](x).numpy()))
        t_ref, t_ours = statistics.median(times["ref"]), statistics.median(times["ours"])
        gflops = 2 * macs * batch / t_ours / 1e9
        print(f"{batch:>5} {t_ref * 1e3:>16.1f} ms {t_ours * 1e3:>10.1f} ms {t_ours / t_ref:>6.3f} "
              f"{gflops:>8.1f} {gflops / peak:>7.1%}")
    print("target: ratio <= 1.05 (ours / keras.applications)")


if __name__ == "__main__":
    main()
