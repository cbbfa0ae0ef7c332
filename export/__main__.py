"""`python -m export`: a trained model to verified SavedModel, TFLite and ONNX files.

    python -m export --run_dir=runs/r20 --out=exported/r20 --formats=float32,int8,qat
    python -m export --model=model.keras --dataset=fashion_mnist --out=exported/m

Flags become an `export.ExportSpec`; `export.export` does the work and writes report.json
beside the models; the report is printed as a table (each file's accuracy in its own runtime,
MediaPipe's and Keras' on the same held-out images). Exit status 1 when a format fails its
verification (its file is not written), 2 on bad input. --verbosity=0 brings back INFO logs;
without it, TensorFlow's and LiteRT's native lines go to OUT/native.log.
"""

import os
import sys

from absl import app, flags

from export import spec as spec_lib
from train import console

FLAGS = flags.FLAGS
_DEFAULTS = spec_lib.ExportSpec()
flags.DEFINE_string("model", None, "A .keras model file (raw-pixel input).")
flags.DEFINE_string("run_dir", None, "A run directory of `python -m train` (model.keras, "
                    "recipe.json).")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_list("formats", list(spec_lib.DEFAULT_FORMATS),
                  f"Formats to export, from {list(spec_lib.FORMATS)}.")
flags.DEFINE_string("dataset", None, "train.data dataset for calibration and verification "
                    "(default: the run's recipe).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default $KERAS_RESNET_DATA or "
                    "~/tensorflow_datasets).")
flags.DEFINE_integer("eval_images", _DEFAULTS.eval_images, "Held-out test images to verify on "
                     "(all of the test split when it has fewer).")
flags.DEFINE_integer("calibration_images", _DEFAULTS.calibration_images,
                     "Training images that calibrate int8.")
flags.DEFINE_bool("frames", _DEFAULTS.frames, "TFLite files take uint8 RGB camera frames "
                  "(MediaPipe, phone apps); --noframes keeps the model's own float32 input.")
flags.DEFINE_enum("io_dtype", _DEFAULTS.io_dtype, list(spec_lib.IO_DTYPES),
                  "Integer type of int8_io's output (and input, with --noframes).")
flags.DEFINE_enum("mediapipe", _DEFAULTS.mediapipe, ["auto", "on", "off"],
                  "Verify every .tflite in MediaPipe's ImageClassifier: auto (when installed), "
                  "on (required), off.")
flags.DEFINE_string("author", _DEFAULTS.author, "TFLite Metadata author.")
flags.DEFINE_string("license", _DEFAULTS.license, "TFLite Metadata license.")
flags.DEFINE_string("model_version", _DEFAULTS.version, "TFLite Metadata version (default: the "
                    "run's weights digest).")
flags.DEFINE_float("min_agreement_float", _DEFAULTS.min_agreement_float,
                   "Least top-1 agreement with Keras for float32/float16/pruned/SavedModel.")
flags.DEFINE_float("min_agreement_int8", _DEFAULTS.min_agreement_int8,
                   "Least top-1 agreement with Keras for dynamic/int8/int8_io/qat.")
flags.DEFINE_integer("fine_tune_steps", _DEFAULTS.fine_tune_steps,
                     "QAT and pruning fine-tuning steps.")
flags.DEFINE_integer("fine_tune_batch_size", _DEFAULTS.fine_tune_batch_size,
                     "QAT and pruning batch size.")
flags.DEFINE_float("fine_tune_learning_rate", _DEFAULTS.fine_tune_learning_rate,
                   "QAT and pruning SGD learning rate.")
flags.DEFINE_string("augment", None, "Fine-tuning augmentation (default: the recipe's, or none).")
flags.DEFINE_float("sparsity", _DEFAULTS.sparsity, "Pruning target sparsity.")
flags.DEFINE_list("threads", [str(t) for t in _DEFAULTS.threads], "Thread counts for latency.")
flags.DEFINE_integer("latency_runs", _DEFAULTS.latency_runs, "Timed runs per latency figure.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Fine-tuning data order.")


def spec_from_flags():
    """The ExportSpec that the flags describe."""
    return spec_lib.ExportSpec(
        formats=tuple(FLAGS.formats), dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        eval_images=FLAGS.eval_images, calibration_images=FLAGS.calibration_images,
        frames=FLAGS.frames, io_dtype=FLAGS.io_dtype, mediapipe=FLAGS.mediapipe,
        author=FLAGS.author, license=FLAGS.license, version=FLAGS.model_version,
        min_agreement_float=FLAGS.min_agreement_float,
        min_agreement_int8=FLAGS.min_agreement_int8, fine_tune_steps=FLAGS.fine_tune_steps,
        fine_tune_batch_size=FLAGS.fine_tune_batch_size,
        fine_tune_learning_rate=FLAGS.fine_tune_learning_rate, augment=FLAGS.augment,
        sparsity=FLAGS.sparsity, threads=tuple(int(t) for t in FLAGS.threads),
        latency_runs=FLAGS.latency_runs, seed=FLAGS.seed)


def print_report(report, out):
    import export

    images = (f"all {report['eval_images']}" if report["all_images"]
              else f"{report['eval_images']} of {report['available_images']}")
    print(f"\n{report['model']} on {images} held-out {report['dataset']} images "
          f"({report['split']}; Keras accuracy {report['keras_accuracy']:.4f}):\n")
    print(export.format_table(report["formats"]))
    for row in report["formats"]:
        if row.get("non_integer_ops"):
            print(f"note: {row['format']} is not fully integer: {row['non_integer_ops']}")
        if "zip_ratio" in row:
            print(f"note: pruned to sparsity {row['sparsity']:.2f}: gzip {row['zipped_bytes']} "
                  f"bytes vs dense {row['dense_zipped_bytes']} ({row['zip_ratio']:.2f}x smaller)")
        if row.get("mediapipe") not in (None, "ran"):
            print(f"note: MediaPipe {row['format']}: {row['mediapipe']}")
    print(f"\nWrote {out} (report.json, metadata.json, labels.txt; errors/<format>/ "
          "confusion.png and mistakes.png; labels and normalization are inside every .tflite "
          "and the .onnx).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}: everything is a --flag.")
    if (FLAGS.model is None) == (FLAGS.run_dir is None):
        raise app.UsageError("Pass exactly one of --model=path.keras or --run_dir=DIR.")
    if not FLAGS.out:
        raise app.UsageError("--out=DIR is required.")
    console.start_command_line(FLAGS.verbosity if FLAGS["verbosity"].present else None,
                               os.path.join(FLAGS.out, "native.log"))
    import export  # its TensorFlow modules load on first use: after the set-up

    try:
        report = export.export(FLAGS.model or FLAGS.run_dir, FLAGS.out, spec_from_flags())
    except export.VerificationError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_report(report, FLAGS.out)
    return 0


if __name__ == "__main__":
    app.run(main)
