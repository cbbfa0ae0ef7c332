"""Time-to-accuracy on Fashion-MNIST: a table and the accuracy-vs-minutes curve of the runs.

    python results/time-to-accuracy/report.py runs/quickstart runs/fast-seed0 runs/fast-seed1 ...

Reads each run directory (summary.json, recipe.json, metrics.csv: the test accuracy on all
10,000 test images, evaluated during training at `eval_every`) and writes results.md and
accuracy_vs_minutes.png beside this script.
"""

import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from train import rundir  # noqa: E402


def command(recipe):
    return f"python -m train --recipe={recipe['name']} --seed={recipe['seed']} --run_dir=DIR"


def main(paths):
    runs = []
    for path in paths:
        run = rundir.RunDir(path)
        runs.append((run.read_summary(), rundir.read_json(run.recipe), run.read_metrics()))
    lines = ["| recipe | model | seed | steps x batch | epochs | test accuracy (10k) | "
             "minutes of training | images/s | command |", "|" + "---|" * 9]
    for summary, recipe, _ in runs:
        lines.append(
            f"| {recipe['name']} | {summary['model']} | {recipe['seed']} | {summary['steps']} x "
            f"{summary['global_batch_size']} | {summary['epochs']} | "
            f"{100 * summary['test_accuracy']:.2f}% | {summary['train_seconds'] / 60:.1f} | "
            f"{summary['images_per_sec']} | `{command(recipe)}` |")
    by_recipe = {}
    for summary, recipe, _ in runs:
        by_recipe.setdefault(recipe["name"], []).append(100 * summary["test_accuracy"])
    lines.append("")
    for name, values in by_recipe.items():
        spread = f" +- {statistics.stdev(values):.2f} (sample std)" if len(values) > 1 else ""
        lines.append(f"- {name}: {statistics.mean(values):.2f}%{spread} over {len(values)} "
                     f"seed(s); min {min(values):.2f}%, max {max(values):.2f}%.")
    cpus = sorted({summary["cpu"] for summary, _, _ in runs})
    lines.append(f"- CPU: {'; '.join(cpus)}, 2 cores.")
    rundir.atomic_write(os.path.join(HERE, "results.md"),
                        "# Time to accuracy, Fashion-MNIST, 2 CPU cores\n\n"
                        + "\n".join(lines) + "\n")
    fig = rundir.figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for summary, recipe, rows in runs:
        minutes, acc = rundir.curve(rows, "eval_accuracy")
        elapsed = {int(r["step"]): float(r["elapsed_s"]) / 60 for r in rows if r["elapsed_s"]}
        ax.plot([elapsed[s] for s in minutes], [100 * a for a in acc], marker=".",
                label=f"{recipe['name']} seed {recipe['seed']} ({summary['model']})")
    ax.axhline(94, color="gray", ls="--", lw=0.8)
    ax.axhline(92, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("minutes of training (2 CPU cores)")
    ax.set_ylabel("test accuracy, 10,000 images (%)")
    ax.set_ylim(85, 96)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    rundir.save_figure(fig, os.path.join(HERE, "accuracy_vs_minutes.png"), dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
