"""Identity vs projection shortcuts (He et al. 2016, sec. 3.3 and Table 3) on CIFAR-sized
data: options A (zero-padding identity), B (projection where dimensions grow) and C (projection
everywhere) on the same net, with the paper's CIFAR recipe.

Table 3 compares them on ImageNet with ResNet-34 (top-1 error, 10-crop: A 25.03, B 24.52,
C 24.19): B is slightly better than A, C marginally better than B.
"""

import os

from train.experiments import report, runner

NAME = "shortcuts"
TITLE = "Shortcut options A, B, C (sec. 3.3, Table 3)"
MODEL = "resnet20"
PAPER_TABLE3 = {"A": 25.03, "B": 24.52, "C": 24.19}
"""Table 3: ResNet-34 top-1 error (%), ImageNet val, 10-crop testing."""


def nets(config: runner.Config) -> list:
    """`MODEL` (or each of `config.models`) with options A, B and C."""
    models = config.models or (MODEL,)
    result = []
    for model in models:
        base = runner.net_for(model)
        if base.plain:
            raise ValueError(f"shortcuts compares residual nets; {model!r} has no shortcuts: "
                             "use a resnetN model.")
        result += [runner.Net(base.model, base.recipe, option) for option in
                   runner.SHORTCUT_OPTIONS]
    return result


def report_runs(records, config: runner.Config, root: str, data_dir=None) -> tuple:
    """Test error per option beside Table 3, and the training curves of each option."""
    grouped = report.by_net(records)
    table, nets_json = [], []
    for label, runs in grouped.items():
        net = runs[0].net
        test = report.stats(r.test_error for r in runs)
        train = report.stats(r.train_error for r in runs)
        table.append([report.pretty_net(net.model), net.shortcut, report.params(runs),
                      report.format_stat(train), report.format_stat(test), len(runs),
                      f"{PAPER_TABLE3[net.shortcut]:.2f}"])
        nets_json.append({"net": label, "model": net.model, "shortcut": net.shortcut,
                          "params": runs[0].summary.get("params"), "train_error_pct": train,
                          "test_error_pct": test, "paper_table3_pct": PAPER_TABLE3[net.shortcut]})

    recipe = records[0].spec.recipe
    panels = []
    for model in dict.fromkeys(n["model"] for n in nets_json):
        panels.append((report.pretty_net(model),
                       {k: v for k, v in grouped.items() if v[0].net.model == model}))
    plot = report.plot_error_curves(panels, os.path.join(root, "shortcuts.png"),
                                    report.eval_label(recipe))
    markdown = (
        f"# {TITLE}\n\n"
        f"{config.dataset}, {records[0].steps} iterations ({config.size}), batch "
        f"{recipe.batch_size}; test error on {runner.test_split(recipe)}. Paper column: "
        "Table 3, ResNet-34 on ImageNet (top-1 %, 10-crop), for the direction of the "
        "differences only.\n\n"
        + report.markdown_table(["net", "shortcut", "params", "training error (%)",
                                 "test error (%)", "runs", "paper, Table 3 (%)"], table)
        + f"\n![training (dashed) and {report.eval_label(recipe)} (bold) error]"
          f"({os.path.basename(plot)})\n"
    )
    return markdown, {"nets": nets_json, "plots": [plot]}
