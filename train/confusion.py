"""Where a classifier errs: a per-class table, a confusion picture and a grid of its mistakes.

    report = write_error_report("runs/r20", labels, probabilities, class_names, images)
    # -> runs/r20/confusion.png, runs/r20/mistakes.png; report["per_class"], report["accuracy"]

Inputs are numpy arrays: labels int (N,), probabilities float (N, classes) (or predictions int
(N,)), images uint8 (N, h, w, C) or a list of (h, w, C) of any sizes. Figures are matplotlib
Figures outside pyplot (`train.rundir.figure`). Up to MATRIX_MAX_CLASSES classes the confusion
picture is the row-normalized matrix (each row: where a class's images went, so the diagonal is
each class's recall); with more, a matrix is unreadable and it shows the most confused pairs.
"""

import math
import os

import numpy as np

from train import rundir

MATRIX_MAX_CLASSES = 20
ANNOTATE_MAX_CLASSES = 12  # cells carry their value up to this many classes
TOP_PAIRS = 20


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """int64 counts (num_classes, num_classes): row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be two (N,) arrays; received shapes "
                         f"{labels.shape} and {predictions.shape}.")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}) for {num_classes} classes; "
                             f"received values from {values.min()} to {values.max()}.")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def per_class_table(labels, predictions, class_names) -> list:
    """One dict per class: class, index, precision (of the images predicted as it; 0.0 when
    none were), recall (of its images), support (its images), predicted (images predicted as
    it)."""
    counts = confusion_matrix(labels, predictions, len(class_names))
    support, predicted, hits = counts.sum(1), counts.sum(0), np.diag(counts)
    return [{"class": str(name), "index": i,
             "precision": float(hits[i] / predicted[i]) if predicted[i] else 0.0,
             "recall": float(hits[i] / support[i]) if support[i] else 0.0,
             "support": int(support[i]), "predicted": int(predicted[i])}
            for i, name in enumerate(class_names)]


def most_confused(labels, predictions, class_names, k: int = TOP_PAIRS) -> list:
    """The k largest off-diagonal cells, largest share first: dicts true, predicted, count,
    share (of the true class's images)."""
    counts = confusion_matrix(labels, predictions, len(class_names))
    support = np.maximum(counts.sum(1, keepdims=True), 1)
    share = counts / support
    np.fill_diagonal(share, 0.0)
    order = np.argsort(-share, axis=None, kind="stable")[:k]
    pairs = []
    for flat in order:
        t, p = divmod(int(flat), len(class_names))
        if t != p and counts[t, p]:
            pairs.append({"true": str(class_names[t]), "predicted": str(class_names[p]),
                          "count": int(counts[t, p]), "share": float(share[t, p])})
    return pairs


def _as_predictions(values):
    values = np.asarray(values)
    return values.argmax(-1) if values.ndim == 2 else values.astype(np.int64)


def confusion_figure(labels, predictions, class_names):
    """A Figure: the row-normalized confusion matrix with class names (<= MATRIX_MAX_CLASSES
    classes), else a bar chart of the TOP_PAIRS most confused (true -> predicted) pairs.
    `predictions` may also be probabilities (N, classes)."""
    predictions = _as_predictions(predictions)
    labels = np.asarray(labels, np.int64)
    n = len(class_names)
    accuracy = float(np.mean(labels == predictions)) if len(labels) else 0.0
    title = f"{len(labels)} images, top-1 accuracy {accuracy:.4f}"
    if n <= MATRIX_MAX_CLASSES:
        return _matrix_figure(confusion_matrix(labels, predictions, n), class_names, title)
    return _pairs_figure(most_confused(labels, predictions, class_names), n, title)


def _matrix_figure(counts, class_names, title):
    n = len(class_names)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(4.0, 0.45 * n + 2.5)
    fig = rundir.figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's images")
    names = [_short(c) for c in class_names]
    ax.set_xticks(range(n), names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (rows sum to 1)\n{title}", fontsize=10)
    if n <= ANNOTATE_MAX_CLASSES:
        for t in range(n):
            for p in range(n):
                if counts[t, p]:
                    ax.text(p, t, f"{share[t, p]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if share[t, p] > 0.5 else "black")
    return fig


def _pairs_figure(pairs, n, title):
    rows = max(len(pairs), 1)
    fig = rundir.figure(figsize=(8.0, 1.2 + 0.32 * rows), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{_short(p['true'])} → {_short(p['predicted'])}" for p in pairs]
    ax.barh(range(len(pairs)), [p["share"] for p in pairs], color="tab:red")
    for i, p in enumerate(pairs):
        ax.text(p["share"], i, f" {p['count']}", va="center", fontsize=8)
    ax.set_yticks(range(len(pairs)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the true class's images predicted as the other class")
    ax.set_title(f"Most confused pairs (true → predicted) of {n} classes\n{title}", fontsize=10)
    if not pairs:
        ax.text(0.5, 0.5, "no mistakes", transform=ax.transAxes, ha="center")
    return fig


def _short(name, width=18):
    name = str(name)
    return name if len(name) <= width else name[:width - 1] + "…"


def mistakes_figure(images_uint8, labels, probabilities, class_names, n: int = 16):
    """A Figure: a grid of the (at most) n most confident wrong predictions, most confident
    first, each with its true class, predicted class and the predicted probability."""
    labels, probabilities = np.asarray(labels, np.int64), np.asarray(probabilities)
    predicted = probabilities.argmax(-1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    cols = max(1, min(len(chosen), math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(len(chosen) / cols))
    fig = rundir.figure(figsize=(2.1 * cols, 2.4 * rows + 0.5), layout="constrained")
    fig.suptitle(f"Most confident mistakes: {len(chosen)} of {len(wrong)} wrong "
                 f"in {len(labels)} images", fontsize=10)
    if not len(chosen):
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for k, i in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, k + 1)
        image = np.asarray(images_uint8[i])
        gray = image.ndim == 2 or image.shape[-1] == 1
        ax.imshow(image.reshape(image.shape[:2]) if gray else image[..., :3],
                  cmap="gray" if gray else None, vmin=0, vmax=255)
        ax.set_title(f"true: {_short(class_names[labels[i]])}\n"
                     f"pred: {_short(class_names[predicted[i]])} {confidence[i]:.2f}",
                     fontsize=8)
        ax.axis("off")
    return fig


def write_error_report(out_dir, labels, probabilities, class_names, images=None,
                       n_mistakes: int = 16) -> dict:
    """Writes out_dir/confusion.png (and out_dir/mistakes.png when `images` are given);
    returns {accuracy, balanced_accuracy, images, per_class, most_confused, worst_class,
    figures}."""
    labels, probabilities = np.asarray(labels, np.int64), np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(class_names)):
        raise ValueError(f"probabilities must be (N, classes) = ({len(labels)}, "
                         f"{len(class_names)}); received shape {probabilities.shape}.")
    predictions = probabilities.argmax(-1)
    table = per_class_table(labels, predictions, class_names)
    present = [row for row in table if row["support"]]
    os.makedirs(out_dir, exist_ok=True)
    figures = {"confusion": rundir.save_figure(
        confusion_figure(labels, predictions, class_names), os.path.join(out_dir, "confusion.png"))}
    if images is not None:
        figures["mistakes"] = rundir.save_figure(
            mistakes_figure(images, labels, probabilities, class_names, n_mistakes),
            os.path.join(out_dir, "mistakes.png"))
    return {"accuracy": float(np.mean(predictions == labels)) if len(labels) else 0.0,
            "balanced_accuracy": float(np.mean([r["recall"] for r in present])) if present
            else 0.0,
            "images": int(len(labels)), "per_class": table,
            "most_confused": most_confused(labels, predictions, class_names, k=10),
            "worst_class": min(present, key=lambda r: r["recall"])["class"] if present else None,
            "figures": figures}
