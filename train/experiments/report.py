"""What an experiment's report is made of: statistics over seeds, Markdown tables, error
curve plots (the paper's Fig. 6 style), and the results files."""

import math
import os

import numpy as np

from train import rundir


def stats(values) -> dict:
    """mean, std (sample, ddof=1; 0 for one value), best (min) and n of `values`."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("stats() needs at least one value.")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 \
        else 0.0
    return {"mean": round(mean, 4), "std": round(std, 4), "best": round(min(values), 4),
            "n": len(values), "values": [round(v, 4) for v in values]}


def format_stat(s: dict, best: bool = False) -> str:
    """'7.51' for one run; 'mean±std' for several, or 'best (mean±std)' as the paper's Table 6."""
    if s["n"] == 1:
        return f"{s['mean']:.2f}"
    spread = f"{s['mean']:.2f}±{s['std']:.2f}"
    return f"{s['best']:.2f} ({spread})" if best else spread


def markdown_table(headers, rows) -> str:
    """A GitHub Markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pretty_net(label: str) -> str:
    """'resnet20-B' -> 'ResNet-20 (B)', 'plain56' -> 'plain-56'."""
    base, _, option = label.partition("-")
    for prefix, name in (("resnet", "ResNet-"), ("plain", "plain-")):
        if base.startswith(prefix):
            base = name + base[len(prefix):]
    return f"{base} ({option})" if option else base


def params(records) -> str:
    n = records[0].summary.get("params")
    return f"{n / 1e6:.2f}M" if n else "?"


def write_results(root: str, markdown: str, results: dict) -> dict:
    """Writes results.md and results.json into `root`; returns `results` with their paths."""
    results = dict(results, results_md=os.path.join(root, "results.md"),
                   results_json=os.path.join(root, "results.json"))
    rundir.atomic_write(results["results_md"], markdown)
    rundir.write_json(results["results_json"], results)
    return results


figure = rundir.figure


def save_figure(fig, path: str) -> str:
    """Writes `fig` to `path` as PNG atomically; returns `path`."""
    return rundir.save_figure(fig, path, dpi=110)


def mean_curve(records, key: str) -> tuple:
    """(steps, error %) averaged over the runs (seeds) of one net, at the steps all share."""
    curves = [dict(zip(*r.curve(key))) for r in records]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return steps, [float(np.mean([c[s] for c in curves])) for s in steps]


def _late_max(steps, err) -> float:
    """The highest error after the first tenth of the run (0 for an empty curve)."""
    late = [e for s, e in zip(steps, err) if s >= 0.1 * steps[-1]] if steps else []
    return max(late or err or [0.0])


def error_curves_figure(panels, eval_label: str = "test"):
    """The paper's Fig. 6 as a Figure: per panel (title, {label: records}), training error
    dashed and `eval_label` error bold against iterations, one colour per net.

    The error axis starts at 0 and ends a little above the highest error after the first
    tenth of the run, as Fig. 6 (0-20%) lets the start leave the plot: the final errors and
    their order by depth are what the figure is for.
    """
    fig = figure(figsize=(6 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, nets) in zip(axes[0], panels):
        top = 0.0
        for i, (label, records) in enumerate(nets.items()):
            train_steps, train_err = mean_curve(records, "train_accuracy")
            ax.plot(train_steps, train_err, ls="--", lw=1.0, color=f"C{i}")
            steps, err = mean_curve(records, "eval_accuracy")
            ax.plot(steps, err, ls="-", lw=2.5, color=f"C{i}", label=pretty_net(label),
                    marker="o" if len(steps) < 3 else None)
            top = max(top, _late_max(train_steps, train_err), _late_max(steps, err))
        ax.set_title(title)
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.set_ylim(0, min(100.0, top * 1.1 + 1))
        ax.grid(alpha=0.3)
        ax.legend(title=f"dashed: training, bold: {eval_label}", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_error_curves(panels, path: str, eval_label: str = "test") -> str:
    """Writes `error_curves_figure` to `path` (PNG); returns `path`."""
    return save_figure(error_curves_figure(panels, eval_label), path)


def eval_label(recipe) -> str:
    """What the bold curve is: 'test' or the evaluation split's name."""
    return "test" if recipe.eval_split == "test" else recipe.eval_split


def by_net(records) -> dict:
    """{net label: [records of its seeds]} in first-seen order."""
    grouped = {}
    for r in records:
        grouped.setdefault(r.net.label, []).append(r)
    return grouped
