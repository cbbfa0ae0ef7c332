"""The run directory: the unit of work of `train.loop`, and the one place that writes files.

    run_dir/
        recipe.json    the resolved recipe; a re-run must ask for the same one (or none)
        checkpoints/   ckpt-<step>: model, optimizer, data iterator, step
                       (tf.train.CheckpointManager)
        logs/          TensorBoard events
        metrics.csv    step, lr, train and eval loss/accuracy, images/s, elapsed time
        model.keras    the final model (raw pixels in: the normalization is inside)
        curves.png     loss and error against iterations
        summary.json   what `train.loop.train` returns
        native.log     TensorFlow's native (C++) stderr lines under the CLI's quiet default
                       (native.worker-N.log for the other workers of a cluster; `native_log`)

Every file is written atomically (a temporary file beside it, then a rename), so a run killed at
any moment leaves each file whole or absent. The experiments' runner and report read and write
through the same functions. Imports no TensorFlow.
"""

import contextlib
import csv
import fcntl
import glob
import io
import json
import os
import shutil
import tempfile

from absl import logging

CSV_FIELDS = ("step", "lr", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
              "images_per_sec", "elapsed_s")


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path`, renamed to `path` when the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=os.path.splitext(path)[1])
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, content) -> str:
    """Writes `content` (str or bytes) to `path` atomically and durably; returns `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
    return path


@contextlib.contextmanager
def file_lock(path: str):
    """An exclusive inter-process lock on `path` held for the `with` block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(path: str, value) -> str:
    return atomic_write(path, json.dumps(value, indent=2) + "\n")


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_labels(folder: str, class_names) -> str:
    """FOLDER/labels.txt: the class names, one a line, in the model's output order (a run
    directory's and an export's)."""
    return atomic_write(os.path.join(folder, "labels.txt"), "".join(f"{n}\n" for n in class_names))


def read_labels(path: str) -> tuple:
    """The class names of a labels.txt file (`write_labels`; blank lines ignored)."""
    with open(path, encoding="utf-8") as f:
        return tuple(line for line in f.read().splitlines() if line)


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Writes a matplotlib Figure to `path` as PNG atomically; returns `path`."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def figure(**kwargs):
    """A matplotlib Figure outside pyplot: no display needed, a notebook's backend left alone."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


# ----------------------------------------------------------------------------- metrics


def read_metrics(path: str, up_to_step=None) -> list:
    """The complete rows of a metrics.csv (a line cut short by a crash is skipped)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (TypeError, ValueError, KeyError):
                continue
            if None in row.values() or (up_to_step is not None and step > up_to_step):
                continue
            rows.append(row)
    return rows


def curve(rows, key: str, transform=float) -> tuple:
    """(steps, values) of the rows that have column `key`."""
    points = [(int(r["step"]), transform(r[key])) for r in rows if r.get(key) not in ("", None)]
    return tuple(zip(*points)) if points else ((), ())


def error_pct(accuracy) -> float:
    return 100.0 * (1.0 - float(accuracy))


def curves_figure(rows, boundaries=()):
    """Loss and error (%) against iterations, train and eval, from metrics rows."""
    fig = figure(figsize=(11, 4))
    ax_loss, ax_err = fig.subplots(1, 2)
    for ax, (train_key, eval_key), transform, name in (
            (ax_loss, ("train_loss", "eval_loss"), float, "loss"),
            (ax_err, ("train_accuracy", "eval_accuracy"), error_pct, "error (%)")):
        ax.plot(*curve(rows, train_key, transform), label="train")
        ax.plot(*curve(rows, eval_key, transform), label="eval", marker=".")
        for b in boundaries:
            ax.axvline(b, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("iterations")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ the directory


class RunDir:
    """Paths and atomic writes inside one run directory (only the chief writes)."""

    def native_log(self) -> str:
        """This process's native log: native.log for the chief (or worker 0 of a cluster
        without one), native.<type>-<index>.log for the others (each process its own file:
        appends from several machines to one file on a shared filesystem can interleave)."""
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = config.get("task") or {}
        kind, index = task.get("type", "chief"), int(task.get("index", 0))
        first = kind == "chief" or (kind == "worker" and index == 0
                                    and "chief" not in (config.get("cluster") or {}))
        return os.path.join(self.path, "native.log" if first else f"native.{kind}-{index}.log")

    def __init__(self, path: str, chief: bool = True):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.chief = chief
        self.recipe = os.path.join(self.path, "recipe.json")
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.logs = os.path.join(self.path, "logs")
        self.metrics = os.path.join(self.path, "metrics.csv")
        self.model = os.path.join(self.path, "model.keras")
        self.curves = os.path.join(self.path, "curves.png")
        self.summary = os.path.join(self.path, "summary.json")

    @property
    def finished(self) -> bool:
        return os.path.exists(self.summary) and os.path.exists(self.model)

    def read_summary(self) -> dict:
        return read_json(self.summary)

    def write_summary(self, summary: dict) -> None:
        if self.chief:
            write_json(self.summary, summary)

    def read_recipe_json(self):
        """recipe.json's text, or None."""
        if not os.path.exists(self.recipe):
            return None
        with open(self.recipe) as f:
            return f.read()

    def read_recipe(self):
        """The run's recipe as its own type (`train.recipes.Recipe`), or None without
        recipe.json; ValueError naming the file when it holds no recipe this version reads."""
        from train import recipes  # here: this module imports no TensorFlow

        text = self.read_recipe_json()
        if text is None:
            return None
        try:
            return recipes.Recipe.from_json(text)
        except ValueError as e:
            raise ValueError(f"{self.recipe} is not a recipe this version reads: {e}") from None

    def save_recipe(self, recipe_json: str) -> None:
        """Writes recipe.json once the run has started (its model and data exist), so a run
        that could not start leaves no recipe behind to conflict with a corrected one."""
        if self.chief and not os.path.exists(self.recipe):
            atomic_write(self.recipe, recipe_json)

    def remove_partial_checkpoints(self) -> list:
        """Deletes `ckpt-N_temp*` and `.tmp_*` left by a process killed while saving."""
        leftovers = glob.glob(os.path.join(self.checkpoints, "*_temp*"))
        leftovers += glob.glob(os.path.join(self.path, ".tmp_*"))
        for path in leftovers:
            logging.warning("Removing %s, left by an interrupted save.", path)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        return leftovers

    def read_metrics(self, up_to_step=None) -> list:
        return read_metrics(self.metrics, up_to_step)

    def rewrite_metrics(self, rows) -> None:
        """Replaces metrics.csv by `rows` (drops rows written after the resumed checkpoint)."""
        if not self.chief:
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics, out.getvalue())

    def append_metrics(self, row: dict) -> None:
        if not self.chief:
            return
        with open(self.metrics, "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(
                {k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})

    def plot_curves(self, rows, boundaries=()) -> None:
        if self.chief:
            save_figure(curves_figure(rows, boundaries), self.curves)
