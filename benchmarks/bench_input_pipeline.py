"""Input pipeline throughput vs. model consumption (images/s) on this machine.

    python benchmarks/bench_input_pipeline.py                      # both parts
    python benchmarks/bench_input_pipeline.py --parts=cifar [--dataset=fashion_mnist] [--stream]
    python benchmarks/bench_input_pipeline.py --parts=photos --num_photos=256 --threads=1,2

Part 'cifar': `train.pipeline.train_batches(augment='cifar')` alone (arrays in memory, a batch
a pure function of the step; `--stream` for the from-disk path), then a ResNet-20 training step
(`fit` on one in-memory batch) and `fit` fed by the pipeline. The pipeline should outrun the
model by >= 3x, so that the input is never what a training run waits for.

Part 'photos' (issue 21): the 224-pixel path from JPEG files. A folder of `--num_photos` JPEGs
at phone-camera sizes (`--photo_sizes`, quality `--jpeg_quality`; generated in a temporary
folder unless `--photos=ROOT` names a tree) is read as training reads it:
`train.data.load('folder:ROOT', 'train')`, `train.pipeline.prepare` and `train_batches` with the
per-image augmentation a photo recipe uses ('random_resized_crop' where `train.augment` has it,
else 'imagenet' scale augmentation): decode, crop to 224, flip. The first load (timed, printed)
checks the files and makes the working copies of photos over 1024 px (`train.copies`, once per
folder); training then decodes those 512-px copies, which is what this row measures. It runs on
a tf.data private thread pool of 1 and of 2 threads (`--threads`; `max_intra_op_parallelism` 1),
so images/s per core is the 1-thread figure (medians of `--rounds`, the pipelines measured in
turn in each round). Beside it, the random-resized crop alone by two decoders: decode the whole
JPEG then crop (the draw of `train.augment.random_resized_crop`, as training does), and
`tf.io.decode_and_crop_jpeg`, which decodes only what the crop window needs (libjpeg-turbo still
reads the entropy-coded rows above the window, but no IDCT or colour conversion outside it,
nothing below it); their pixels are compared first, and the ratio printed; and the whole JPEG's
decode alone, its share of the cost. Where training holds a small split in memory (decoded
once), the decode-then-crop figure stands for the per-epoch cost of a streamed one. Then what
ResNet-18 and ResNet-50 fine-tuning consume on this CPU (`benchmarks/bench_training.py`'s fine-
tuning step, batch `--model_batch`, in the recipe's precision here, measured in this run), and
the decode cores that a GPU training ResNet-50 at `--gpu_resnet50_images_per_sec` would need:
that GPU figure is a published one (not measured here), see the flag.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from absl import app, flags  # noqa: E402

flags.DEFINE_list("parts", ["cifar", "photos"], "What to measure: cifar, photos.")
flags.DEFINE_string("dataset", "fashion_mnist", "cifar part: dataset name for train.data.load.")
flags.DEFINE_string("data_dir", None, "cifar part: TFDS data dir (default: $KERAS_RESNET_DATA "
                    "or ~/tensorflow_datasets).")
flags.DEFINE_integer("batch_size", 128, "cifar part: global batch size (paper sec. 4.2: 128).")
flags.DEFINE_integer("steps", 200, "cifar part: timed pipeline batches.")
flags.DEFINE_integer("model_steps", 30, "cifar part: timed ResNet-20 training steps.")
flags.DEFINE_bool("stream", False, "cifar part: measure the streaming (from disk) path instead.")
flags.DEFINE_string("photos", None, "photos part: a folder tree of JPEGs in a layout "
                    "train.data.load('folder:ROOT') reads (default: generate --num_photos "
                    "JPEGs in ROOT/train/<class>/ of a temporary folder).")
flags.DEFINE_integer("num_photos", 128, "photos part: JPEGs to generate.")
flags.DEFINE_list("photo_sizes", ["1600x1200", "1200x1600"],
                  "photos part: WxH of the generated JPEGs (landscape and portrait phone photos, "
                  "taken in turn).")
flags.DEFINE_integer("jpeg_quality", 95, "photos part: JPEG quality of the generated photos "
                     "(phone cameras save at about 90-97).")
flags.DEFINE_integer("photo_batch", 32, "photos part: batch size of the pipeline.")
flags.DEFINE_integer("photo_epochs", 3, "photos part: timed passes over the photos, after one "
                     "warm-up pass (the streamed split's shuffle buffer fills once per pass).")
flags.DEFINE_list("threads", ["1", "2"], "photos part: tf.data private thread pool sizes.")
flags.DEFINE_integer("rounds", 3, "photos part: rounds of the pipeline measurements, taken in "
                     "turn in each round (medians printed).")
flags.DEFINE_list("models", ["resnet18", "resnet50"], "photos part: networks whose fine-tuning "
                  "step is measured beside the pipeline (empty: skip).")
flags.DEFINE_list("phases", ["whole", "head"], "photos part: fine-tuning phases measured "
                  "('whole': all but BatchNorm trains; 'head': the classifier alone).")
flags.DEFINE_integer("model_batch", 32, "photos part: batch of the fine-tuning step.")
flags.DEFINE_integer("finetune_steps", 5, "photos part: timed fine-tuning steps.")
flags.DEFINE_float("gpu_resnet50_images_per_sec", 2470.0,
                   "Training images/s of ResNet-50 on one GPU, to size the decode cores it needs. "
                   "Default: 2470, NVIDIA DeepLearningExamples' published figure for ResNet-50 "
                   "v1.5 in PyTorch, mixed precision, 1x A100 80GB (DGX A100, pytorch-21.03 "
                   "container, PyTorch/Classification/ConvNets/resnet50v1.5/README.md); an H100 "
                   "is faster. Not measured here.")
FLAGS = flags.FLAGS

from train import console  # noqa: E402

console.prefer_onednn()
console.import_tensorflow_quietly()

import bench_training  # noqa: E402
import tensorflow as tf  # noqa: E402

from train import augment as augment_lib  # noqa: E402
from train import data, pipeline, views  # noqa: E402


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


def cifar_part():
    ds, info = data.load(FLAGS.dataset, "train", data_dir=FLAGS.data_dir)
    view = views.for_dataset(info)
    examples = pipeline.Examples(info, view, dataset=ds) if FLAGS.stream else \
        pipeline.prepare(ds, info, view)
    train = pipeline.train_batches(examples, batch_size=FLAGS.batch_size, augment="cifar")
    rate = images_per_second(iter(train), FLAGS.steps, FLAGS.batch_size)
    print(f"pipeline ({FLAGS.dataset}, cifar augmentation, batch {FLAGS.batch_size}): "
          f"{rate:,.0f} images/s on {os.cpu_count()} cores")
    model_rate, fed_rate = model_rates(train, view.shape, info.num_classes, FLAGS.batch_size,
                                       FLAGS.model_steps)
    print(f"ResNet-20 train step, in-memory batch: {model_rate:,.0f} images/s")
    print(f"ResNet-20 train step, fed by the pipeline: {fed_rate:,.0f} images/s "
          f"({fed_rate / model_rate:.2f}x of in-memory)")
    ratio = rate / model_rate
    print(f"pipeline / model = {ratio:.1f}x (target >= 3x): {'OK' if ratio >= 3 else 'TOO SLOW'}")


# ------------------------------------------------------------------------ photos part


def _photo(rng, width, height):
    """A photo-like RGB image: smooth colour fields and soft-edged shapes plus sensor-like
    noise (pure noise would make JPEGs of unrealistic size and decode time)."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    image = image.resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(10, width // 3))
        y1 = y0 + int(rng.integers(10, height // 3))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    image = image.resize((width // 4, height // 4), Image.BILINEAR)
    image = image.resize((width, height), Image.BICUBIC)
    pixels = np.asarray(image, np.float32) + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_photos(root, count, sizes, quality, classes=2, seed=0):
    """Writes `count` JPEGs to root/train/class_<k>/, sizes (w, h) taken in turn; returns the
    mean bits per pixel of the files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bits = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        folder = os.path.join(root, "train", f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"photo_{i:05d}.jpg")
        _photo(rng, width, height).save(path, "JPEG", quality=quality)
        bits.append(os.path.getsize(path) * 8 / (width * height))
    return statistics.mean(bits)


def with_threads(ds, threads):
    """`ds` on a private tf.data thread pool of `threads`, one thread per op."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def time_images(ds, warmup_batches, batches, batch_size):
    """images/s of `batches` batches of `ds` after `warmup_batches`."""
    return images_per_second(iter(ds), batches, batch_size, warmup=warmup_batches)


def photo_augmentation():
    """The per-image augmentation of photo training: 'random_resized_crop' where train.augment
    has it, else 'imagenet'."""
    return "random_resized_crop" if hasattr(augment_lib, "random_resized_crop") else "imagenet"


def project_pipeline(root, batch, size=224):
    """Training's own batches of the folder: (dataset, augment, Examples)."""
    augment = photo_augmentation()
    ds, info = data.load(f"folder:{root}", "train")
    view = views.for_dataset(info, size, augment)
    examples = pipeline.prepare(ds, info, view, augment)
    return pipeline.train_batches(examples, batch_size=batch, augment=augment), augment, examples


def random_resized_crop_from_file(path, seed, size, window_decode):
    """Random-resized crop (area 8-100%, aspect 3/4-4/3, 10 tries, as
    `train.augment.random_resized_crop` draws it) and flip of a JPEG file -> float32 (size, 3).
    window_decode: `tf.io.decode_and_crop_jpeg` of the crop window, else decode all then crop."""
    contents = tf.io.read_file(path)
    s_box, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(contents), tf.zeros([1, 0, 4], tf.float32), seed=s_box,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    if window_decode:
        window = tf.stack([begin[0], begin[1], box[0], box[1]])
        crop = tf.io.decode_and_crop_jpeg(contents, window, channels=3)
    else:
        crop = tf.slice(tf.io.decode_jpeg(contents, channels=3), begin, box)
    x = tf.image.resize(tf.cast(crop, tf.float32), size, antialias=True)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return tf.image.stateless_random_flip_left_right(x, seed=s_flip)


def crop_pipeline(paths, batch, window_decode, size=(224, 224)):
    """Endless batches of `random_resized_crop_from_file`, seeded by the element's index."""
    base = tf.constant([0, 3], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat().enumerate()
    ds = ds.map(lambda i, p: random_resized_crop_from_file(
        p, tf.random.experimental.stateless_fold_in(base, i), size, window_decode),
        num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(2)


def decode_pipeline(paths, batch):
    """Endless batches of whole-JPEG decodes alone (one pixel of each kept: sizes differ)."""
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat()
    ds = ds.map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3)[0, 0],
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch).prefetch(2)


def check_crops(paths, tries=6, size=(224, 224)):
    """(max abs pixel difference of the two decoders' crops, max abs difference of
    decode-then-crop from `train.augment.random_resized_crop`, None where it is absent)."""
    window, project = 0.0, None
    for i in range(tries):
        path, seed = paths[i % len(paths)], tf.constant([i, 5], tf.int64)
        whole = random_resized_crop_from_file(path, seed, size, False)
        part = random_resized_crop_from_file(path, seed, size, True)
        window = max(window, float(tf.reduce_max(tf.abs(whole - part))))
        if hasattr(augment_lib, "random_resized_crop"):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            ours = augment_lib.random_resized_crop(image, seed, size=size)
            project = max(project or 0.0, float(tf.reduce_max(tf.abs(whole - ours))))
    return window, project


def _cores(rate, per_core):
    return f"{rate / per_core:.1f}" if per_core else "n/a"


def photo_rates(root, paths, threads):
    """{label: {threads: median images/s over --rounds}} of training's pipeline and of the two
    crop decoders, measured in turn in each round; also the augment used and the Examples."""
    batch, n = FLAGS.photo_batch, len(paths)
    per_pass = max(1, -(-n // batch))
    timed = per_pass * FLAGS.photo_epochs
    rates = {k: {t: [] for t in threads}
             for k in ("project", "decode_only", "decode_then_crop", "decode_and_crop_jpeg")}
    for _ in range(FLAGS.rounds):
        for t in threads:
            train, augment, examples = project_pipeline(root, batch)
            rates["project"][t].append(time_images(with_threads(train, t), per_pass, timed,
                                                   batch))
            for label, window in (("decode_then_crop", False), ("decode_and_crop_jpeg", True)):
                ds = with_threads(crop_pipeline(paths, batch, window), t)
                rates[label][t].append(time_images(ds, 2, timed, batch))
            ds = with_threads(decode_pipeline(paths, batch), t)
            rates["decode_only"][t].append(time_images(ds, 2, timed, batch))
    medians = {k: {t: statistics.median(v) for t, v in row.items()} for k, row in rates.items()}
    return medians, augment, examples


def fine_tuning_rates():
    """{(model, phase): images/s of ours' fine-tuning step at 224} (fresh processes), in the
    precision the finetune recipe takes on this CPU (mixed_precision 'auto')."""
    from train import strategies

    precision = "mixed_bfloat16" if strategies.cpu_supports_bf16() else "float32"
    rates = {}
    for model in FLAGS.models:
        for phase in FLAGS.phases:
            rates[model, f"{phase} {precision}"] = bench_training.finetune_rate(
                "ours", model, phase, precision, batch=FLAGS.model_batch,
                steps=FLAGS.finetune_steps)
    return rates


def photos_part():
    threads = [int(t) for t in FLAGS.threads]
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in FLAGS.photo_sizes]
    temporary = None if FLAGS.photos else tempfile.mkdtemp(prefix="bench_photos_")
    root = FLAGS.photos or temporary
    try:
        if temporary:
            bits = make_photos(root, FLAGS.num_photos, sizes, FLAGS.jpeg_quality)
            print(f"photos: {FLAGS.num_photos} JPEGs, {', '.join(FLAGS.photo_sizes)}, quality "
                  f"{FLAGS.jpeg_quality}, {bits:.2f} bits/pixel (phones: about 2-3)")
        paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root)
                       for f in fs if f.lower().endswith((".jpg", ".jpeg")))
        if not paths:
            raise app.UsageError(f"--photos={root}: no .jpg/.jpeg files below it.")
        window_diff, project_diff = check_crops(paths)
        start = time.perf_counter()  # the first load checks the files, makes working copies
        tree = data.describe(f"folder:{root}")
        print(f"first load of the folder (checks; working copies of large photos, once): "
              f"{time.perf_counter() - start:.1f} s for {len(paths)} photos\n{tree}")
        rates, augment, examples = photo_rates(root, paths, threads)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    cpu = bench_training.cpu_line()
    print(f"CPU: {cpu}")
    mode = "in memory, decoded once" if examples.in_memory else "streamed, decoded each epoch"
    print(f"training pipeline: train.data.load('folder:...') + pipeline.train_batches("
          f"augment={augment!r}), {len(examples)} photos {mode}, batch {FLAGS.photo_batch}")
    print(f"crop check: decode_and_crop_jpeg vs decode-then-crop max |diff| {window_diff:.0f}; "
          "decode-then-crop vs train.augment.random_resized_crop "
          + ("(absent)" if project_diff is None else f"max |diff| {project_diff:.0f}"))
    labels = {"project": f"training pipeline ({augment})",
              "decode_only": "decode the whole JPEG alone (no crop)",
              "decode_then_crop": "random-resized crop, decode all then crop",
              "decode_and_crop_jpeg": "random-resized crop, decode_and_crop_jpeg"}
    for key, label in labels.items():
        row = ", ".join(f"{t} thread{'s' * (t > 1)} {r:6.1f} ({r / t:5.1f}/core)"
                        for t, r in rates[key].items())
        print(f"{label:>44}: images/s {row}")
    one = min(threads)
    ratio = rates["decode_and_crop_jpeg"][one] / rates["decode_then_crop"][one]
    print(f"decode_and_crop_jpeg / decode then crop ({one} thread): {ratio:.2f}x on {cpu}")
    per_core = rates["project"][one] / one
    if examples.in_memory:
        per_core = rates["decode_then_crop"][one] / one
        print("(the training pipeline held these photos in memory, decoded once: the decode-"
              "then-crop rate, the same ops per image, stands for it below)")
    window_core = rates["decode_and_crop_jpeg"][one] / one
    consumption = fine_tuning_rates()
    for (model, phase), rate in consumption.items():
        print(f"{model} fine-tune {phase} step (ours, batch {FLAGS.model_batch}, 224 px): "
              f"{rate:6.1f} images/s: feeding it takes {_cores(rate, per_core)} cores decoding")
    gpu = FLAGS.gpu_resnet50_images_per_sec
    print(f"a GPU training ResNet-50 at {gpu:,.0f} images/s (--gpu_resnet50_images_per_sec, "
          f"default a published A100 figure; not measured here) needs {_cores(gpu, per_core)} "
          f"cores of this CPU decoding with the training pipeline, "
          f"{_cores(gpu, window_core)} with decode_and_crop_jpeg")


def main(argv):
    del argv
    unknown = [p for p in FLAGS.parts if p not in ("cifar", "photos")]
    if unknown:
        raise app.UsageError(f"--parts={','.join(FLAGS.parts)}: use cifar and/or photos.")
    if "cifar" in FLAGS.parts:
        cifar_part()
    if "photos" in FLAGS.parts:
        photos_part()


if __name__ == "__main__":
    app.run(main)
