"""`python -m keras_resnet [--time] [NAME ...]`: the model table (params, multiply-adds, optional
batch-1 forward time) of every named variant."""

import argparse
import time

import numpy as np


def main():
    import keras_resnet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="variants (default: all)")
    parser.add_argument("--time", action="store_true", help="time a batch-1 forward pass")
    args = parser.parse_args()
    names = args.names or list(keras_resnet.ARCHS)
    unknown = sorted(set(names) - set(keras_resnet.ARCHS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(keras_resnet.ARCHS)}")
    print(f"{'model':<12} {'input':>9} {'params':>11} {'mult-adds':>10} {'weights':<12}"
          + (f" {'forward':>9}" if args.time else ""))
    for name in names:
        arch = keras_resnet.ARCHS[name]
        size = arch.default_size
        classes = 10 if arch.stem == "cifar" else 1000
        model = keras_resnet.create(name, weights=None, classes=classes,
                                    input_shape=(size, size, 3))
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        row = (f"{name:<12} {f'{size}x{size}':>9} {trainable / 1e6:>10.2f}M "
               f"{keras_resnet.count_multiply_adds(model) / 1e9:>9.3f}G "
               f"{','.join(keras_resnet.weights.tags(name)) or '-':<12}")
        if args.time:
            x = np.zeros((1, size, size, 3), "float32")
            model(x, training=False)
            t = time.perf_counter()
            model(x, training=False)
            row += f" {(time.perf_counter() - t) * 1e3:>7.1f}ms"
        print(row, flush=True)


if __name__ == "__main__":
    main()
