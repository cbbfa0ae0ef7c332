"""Input pipeline throughput vs. model consumption (images/s) on this machine.

    python benchmarks/bench_input_pipeline.py [--dataset=fashion_mnist] [--batch_size=128]

Measures `train.pipeline.batches(training=True, augment='cifar')` alone (arrays in memory, a
batch a pure function of the step; `--stream` for the from-disk path), then, if
`keras_resnet` imports, a ResNet-20 training step (`fit` on one in-memory batch) and `fit`
fed by the pipeline. The pipeline should outrun the model by >= 3x, so that the input is
never what a training run waits for.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from train import data, pipeline, views  # noqa: E402

flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name for train.data.load.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $KERAS_RESNET_DATA or ~/tensorflow_datasets).")
flags.DEFINE_integer("batch_size", 128, "Global batch size (paper sec. 4.2: 128).")
flags.DEFINE_integer("steps", 200, "Timed pipeline batches.")
flags.DEFINE_integer("model_steps", 30, "Timed ResNet-20 training steps.")
flags.DEFINE_bool("stream", False, "Measure the streaming (from disk) path instead.")
FLAGS = flags.FLAGS


def images_per_second(iterator, steps, batch_size, warmup=10):
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def model_rates(ds, shape, classes, batch_size, steps):
    """(images/s of fit on one repeated in-memory batch, images/s of fit fed by `ds`)."""
    import keras
    import keras_resnet
    import tensorflow as tf

    model = keras_resnet.ResNet20(weights=None, input_shape=shape, classes=classes)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    batch = next(iter(ds))
    synthetic = tf.data.Dataset.from_tensors(batch).repeat()
    for source in (synthetic, ds):  # build, trace, warm up
        model.fit(source, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)
    rates = []
    for source in (synthetic, ds):
        start = time.perf_counter()
        model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def main(argv):
    del argv
    ds, info = data.load(FLAGS.dataset, "train", data_dir=FLAGS.data_dir)
    view = views.for_dataset(info)
    examples = pipeline.Examples(info, view, dataset=ds) if FLAGS.stream else \
        pipeline.prepare(ds, info, view)
    train = pipeline.train_batches(examples, batch_size=FLAGS.batch_size, augment="cifar")
    rate = images_per_second(iter(train), FLAGS.steps, FLAGS.batch_size)
    print(f"pipeline ({FLAGS.dataset}, cifar augmentation, batch {FLAGS.batch_size}): "
          f"{rate:,.0f} images/s on {os.cpu_count()} cores")
    try:
        import keras_resnet  # noqa: F401
    except ImportError as error:
        print(f"keras_resnet does not import ({error}); model rate skipped.")
        return
    model_rate, fed_rate = model_rates(train, view.shape, info.num_classes, FLAGS.batch_size,
                                       FLAGS.model_steps)
    print(f"ResNet-20 train step, in-memory batch: {model_rate:,.0f} images/s")
    print(f"ResNet-20 train step, fed by the pipeline: {fed_rate:,.0f} images/s "
          f"({fed_rate / model_rate:.2f}x of in-memory)")
    ratio = rate / model_rate
    print(f"pipeline / model = {ratio:.1f}x (target >= 3x): {'OK' if ratio >= 3 else 'TOO SLOW'}")


if __name__ == "__main__":
    app.run(main)
