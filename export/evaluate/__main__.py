"""`python -m export.evaluate FILE... --dataset=NAME|folder:ROOT`: how good is each file here?

    python -m export.evaluate exported/r20/model_int8.tflite exported/r20/model.onnx \\
        --dataset=folder:~/field_photos --reference=exported/r20/saved_model --out=eval/field

FILE: a .tflite, .onnx or .keras file, a SavedModel folder or a run directory; each is run by
its own runtime with the input size, labels and input contract read from the file
(`export.evaluate`). Prints the table that `python -m export` prints, writes OUT/report.json
and, per file, OUT/<file>/confusion.png and mistakes.png. Exit status 2 on bad input (a
dataset whose classes are not the file's labels, a file that is not a model). --verbosity=0
brings back INFO logs; without it, native lines go to OUT/native.log.
"""

import os
import sys

from absl import app, flags

from train import console, rundir

flags.DEFINE_string("dataset", None, "train.data dataset name (fashion_mnist, cifar10, ...) or "
                    "folder:ROOT (ROOT/<class>/* or ROOT/<split>/<class>/*).")
flags.DEFINE_string("split", "test", "Split to evaluate on, TFDS slicing allowed (test[:1000]); "
                    "all: every image of a folder (a folder of new photos).")
flags.DEFINE_string("reference", None, "A file whose top-1 each FILE is compared with "
                    "(agreement), e.g. the SavedModel or the .keras model.")
flags.DEFINE_string("out", None, "Output directory (default: FILE's folder/evaluation).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default $KERAS_RESNET_DATA or "
                    "~/tensorflow_datasets).")
flags.DEFINE_integer("max_images", None, "Evaluate on the first N images of the split.")
flags.DEFINE_string("labels", None, "Class names (one a line) for a .keras model without "
                    "labels.txt beside it.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts for latency.")
flags.DEFINE_integer("latency_runs", 50, "Timed batch-1 runs per latency figure.")
flags.DEFINE_enum("mediapipe", "auto", ["auto", "on", "off"], "Also run frame .tflite files "
                  "in MediaPipe's ImageClassifier: auto (when installed), on, off.")
FLAGS = flags.FLAGS


def print_report(report, out):
    from export import verify

    images = (f"all {report['images']}" if report["all_images"]
              else f"{report['images']} of {report['available_images']}")
    reference = f"; agreement with {report['reference']}" if report["reference"] else ""
    print(f"\n{images} {report['dataset']} images ({report['split']}, "
          f"{len(report['class_names'])} classes{reference}):\n")
    print(verify.format_table(report["files"]) + "\n")
    for row in report["files"]:
        worst = f", worst class {row['worst_class']!r}" if row.get("worst_class") else ""
        tf_ms = row["latency_ms"].get("tf")
        latency = f", {tf_ms:.2f} ms a batch-1 call (TF threads)" if tf_ms else ""
        print(f"{row['format']} ({row['runtime']}): top-1 {row['accuracy']:.4f}"
              f"{worst}{latency}")
        if row.get("mediapipe") not in (None, "ran"):
            print(f"  note: MediaPipe {row['mediapipe']}")
    print(f"\nWrote {out}/report.json and, per file, confusion.png and mistakes.png.")


def main(argv):
    files = argv[1:]
    if not files:
        raise app.UsageError("usage: python -m export.evaluate FILE [FILE ...] "
                             "--dataset=NAME|folder:ROOT")
    if not FLAGS.dataset:
        raise app.UsageError("--dataset=NAME or --dataset=folder:ROOT is required.")
    out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(files[0])), "evaluation")
    console.start_command_line(FLAGS.verbosity if FLAGS["verbosity"].present else None,
                               os.path.join(out, "native.log"))
    from export.evaluate import evaluate  # after the process set-up: imports TensorFlow

    try:
        report = evaluate(files, FLAGS.dataset, FLAGS.split, reference=FLAGS.reference,
                          data_dir=FLAGS.data_dir, max_images=FLAGS.max_images, out_dir=out,
                          labels=rundir.read_labels(FLAGS.labels) if FLAGS.labels else None,
                          threads=tuple(int(t) for t in FLAGS.threads),
                          latency_runs=FLAGS.latency_runs, mediapipe=FLAGS.mediapipe)
    except (ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_report(report, out)
    return 0


if __name__ == "__main__":
    app.run(main)
