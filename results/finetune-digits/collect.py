"""Gathers the runs of results/finetune-digits/run.sh into results.json and accuracy.png.

    python results/finetune-digits/collect.py RUNS_DIR OUT_DIR [PREFIX]

RUNS_DIR holds <split>-source/ and runs named [PREFIX]<split>-<budget>_<arm>_s<seed> (arm:
pretrained | scratch), each with the summary.json that `python -m train` writes. Prints a markdown
table of the runs named with PREFIX (none: the first experiment's, made before commit fdbb929;
`v2-`: the recipe after it): per budget and arm the mean test accuracy over seeds, its spread
(min-max), and the gap of the means; then the accuracy of every seed. results.json holds every
run; the figure is accuracy.png (no prefix) or accuracy_<prefix>.png.
"""

import collections
import csv
import json
import os
import re
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def peak_eval_loss(run_dir):
    """The highest eval loss in the run's metrics.csv (an overshooting head shows here: chance
    is ln(classes)), or None without one."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        losses = [float(r["eval_loss"]) for r in csv.DictReader(f) if r.get("eval_loss")]
    return max(losses, default=None)


def load(runs):
    """{name: summary dict, plus peak_eval_loss} for every run directory with a summary.json."""
    out = {}
    for name in sorted(os.listdir(runs)):
        path = os.path.join(runs, name, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
            out[name]["peak_eval_loss"] = peak_eval_loss(os.path.join(runs, name))
    return out


def experiment(summaries, prefix):
    """The runs of one experiment: named with `prefix`, or with no vN- prefix when it is empty."""
    if prefix:
        return {n: s for n, s in summaries.items() if n.startswith(prefix)}
    return {n: s for n, s in summaries.items() if not re.match(r"v\d+-", n)}


def table(summaries):
    """Rows (budget, steps, {arm: [accuracy %, ...]}, {arm: [seconds, ...]}), by budget."""
    acc, secs, steps = (collections.defaultdict(lambda: collections.defaultdict(list))
                        for _ in range(3))
    for name, s in summaries.items():
        if name.endswith("-source"):
            continue
        budget, arm, _seed = name.rsplit("_", 2)
        acc[budget][arm].append(100 * s["test_accuracy"])
        secs[budget][arm].append(s["train_seconds"])
        steps[budget][arm].append(s["steps"])
    return [(b, steps[b]["pretrained"][0], acc[b], secs[b]) for b in acc
            if acc[b]["pretrained"]]


def figure(rows, path):
    """Test accuracy of the d6to4 runs against steps, one dot per seed, means joined by a line."""
    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = sorted(rows, key=lambda r: r[1])
    rows = [r for r in rows if "d6to4-" in r[0]]
    for arm, color in (("pretrained", "tab:blue"), ("scratch", "tab:orange")):
        rows = [r for r in rows if r[2]["scratch"]]  # pairs only
        xs = [r[1] for r in rows if r[2][arm]]
        ax.plot(xs, [sum(r[2][arm]) / len(r[2][arm]) for r in rows if r[2][arm]], color=color,
                label="source: digits 0-5" if arm == "pretrained" else "--weights=none")
        for r in rows:
            ax.scatter([r[1]] * len(r[2][arm]), r[2][arm], color=color, s=12)
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning steps (batch 32)")
    ax.set_ylabel("test accuracy, digits 6-9 (%)")
    ax.set_title("ResNet-18, 10 images a class, 674 test images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(runs, out, prefix=""):
    summaries = load(runs)
    rows = table(experiment(summaries, prefix))
    for name, s in summaries.items():
        if name.endswith("-source"):
            print(f"{name}: {100 * s['test_accuracy']:.2f}% on {s['test_images']} test images, "
                  f"{s['steps']} steps, {s['train_seconds']:.0f} s")
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print("| budget | steps | seeds | pretrained mean (min-max) | `--weights=none` mean (min-max)"
          " | gap of means | s/run |")
    print("|---|---|---|---|---|---|---|")
    for budget, steps, acc, secs in sorted(rows, key=lambda r: (r[0][:5], r[1])):
        p, n = acc["pretrained"], acc["scratch"]
        if not n:  # a pretrained-only diagnostic: its --weights=none twin is another row
            print(f"| {budget} | {steps} | {len(p)} | {mean(p):.1f}% ({min(p):.1f}-{max(p):.1f}) "
                  f"| - | - | {mean(secs['pretrained']):.0f} / - |")
            continue
        print(f"| {budget} | {steps} | {len(p)} | {mean(p):.1f}% ({min(p):.1f}-{max(p):.1f}) | "
              f"{mean(n):.1f}% ({min(n):.1f}-{max(n):.1f}) | {mean(p) - mean(n):+.1f} | "
              f"{mean(secs['pretrained']):.0f} / {mean(secs['scratch']):.0f} |")
    for budget, _steps, acc, _secs in sorted(rows, key=lambda r: (r[0][:5], r[1])):
        peaks = [s["peak_eval_loss"] for name, s in summaries.items()
                 if name.startswith(budget + "_pretrained_")]
        print(f"{budget} peak eval loss of the pretrained runs: "
              + ", ".join(f"{v:.2f}" for v in peaks if v is not None))
        p, n = acc["pretrained"], acc["scratch"] or ["-"] * len(acc["pretrained"])
        print(f"{budget} per seed (pretrained / none): " + ", ".join(
            f"{a:.1f} / {b if b == '-' else f'{b:.1f}'}" for a, b in zip(p, n)))
    keep = ("test_accuracy", "test_images", "steps", "train_seconds", "images_per_sec", "cpu",
            "weights_sha256", "precision", "peak_eval_loss")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({name: {k: s.get(k) for k in keep} for name, s in summaries.items()}, f,
                  indent=1)
    name = f"accuracy_{prefix.rstrip('-')}.png" if prefix else "accuracy.png"
    figure(rows, os.path.join(out, name))


if __name__ == "__main__":
    main(*sys.argv[1:])
