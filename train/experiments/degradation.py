"""The degradation problem (He et al. 2016, sec. 4.2, Fig. 6): plain-20/32/44/56 against
ResNet-20/32/44/56 with the paper's CIFAR recipe.

The finding to reproduce: deeper plain nets have higher training error; deeper ResNets lower.
"""

import os

from train.experiments import report, runner

NAME = "degradation"
TITLE = "Degradation: plain vs residual nets (sec. 4.2, Fig. 6)"
MODELS = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44",
          "resnet56")


def nets(config: runner.Config) -> list:
    """The eight nets of Fig. 6, or `config.models`."""
    return [runner.net_for(m) for m in (config.models or MODELS)]


def ordering(rows, deeper_is: str):
    """Whether the training error is strictly monotone in depth ('higher' or 'lower' for
    deeper nets) over `rows` [(depth, error)]; None with fewer than two nets."""
    rows = sorted(rows)
    if len(rows) < 2:
        return None
    pairs = list(zip(rows, rows[1:]))
    if deeper_is == "higher":
        return all(b[1] > a[1] for a, b in pairs)
    return all(b[1] < a[1] for a, b in pairs)


def report_runs(records, config: runner.Config, root: str, data_dir=None) -> tuple:
    """Table of final training/test error per net, the two orderings, and Fig. 6."""
    grouped = report.by_net(records)
    table, nets_json = [], []
    for label, runs in grouped.items():
        train = report.stats(r.train_error for r in runs)
        test = report.stats(r.test_error for r in runs)
        net = runs[0].net
        table.append([report.pretty_net(label), net.depth, report.params(runs),
                      report.format_stat(train), report.format_stat(test), len(runs)])
        nets_json.append({"net": label, "plain": net.plain, "depth": net.depth,
                          "params": runs[0].summary.get("params"),
                          "train_error_pct": train, "test_error_pct": test})

    findings = {}
    lines = []
    for family, deeper_is, plain in (("plain", "higher", True), ("resnet", "lower", False)):
        rows = [(n["depth"], n["train_error_pct"]["mean"]) for n in nets_json
                if n["plain"] == plain]
        holds = ordering(rows, deeper_is)
        key = f"{family}_deeper_{deeper_is}_train_error"
        findings[key] = holds
        values = ", ".join(f"{d}: {e:.2f}" for d, e in sorted(rows))
        name = "plain nets" if plain else "ResNets"
        verdict = {True: "**holds**", False: "**does not hold**", None: "n/a (fewer than 2 nets)"}
        lines.append(f"- {name}, deeper -> {deeper_is} training error: {verdict[holds]}"
                     + (f" (training error % by depth: {values})" if rows else ""))

    train = {(n["plain"], n["depth"]): n["train_error_pct"]["mean"] for n in nets_json}
    depths = sorted(d for plain, d in train if plain and (False, d) in train)
    key = "resnet_lower_train_error_than_plain_at_each_depth"
    findings[key] = all(train[(False, d)] < train[(True, d)] for d in depths) if depths else None
    lines.append("- ResNet below plain net of the same depth (sec. 4.2): "
                 + {True: "**holds**", False: "**does not hold**", None: "n/a"}[findings[key]]
                 + (" (training error % by depth: " + "; ".join(
                     f"{d}: plain {train[(True, d)]:.2f}, ResNet {train[(False, d)]:.2f}"
                     for d in depths) + ")" if depths else ""))

    recipe = records[0].spec.recipe
    panels = [(title, {k: v for k, v in grouped.items() if v[0].net.plain == plain})
              for title, plain in (("plain networks", True), ("ResNets", False))]
    plot = report.plot_error_curves([p for p in panels if p[1]],
                                    os.path.join(root, "degradation.png"),
                                    report.eval_label(recipe))
    steps = records[0].steps
    markdown = (
        f"# {TITLE}\n\n"
        f"{config.dataset}, {steps} iterations ({config.size}), batch {recipe.batch_size}; "
        f"training error: logged on augmented batches, averaged over the last "
        f"{runner.TAIL_FRACTION:.0%} of iterations; test error: on "
        f"{runner.test_split(recipe)} at the end (BN in inference mode).\n\n"
        + report.markdown_table(
            ["net", "layers", "params", "training error (%)", "test error (%)", "runs"], table)
        + "\nPaper's finding (Fig. 6):\n\n" + "\n".join(lines) + "\n\n"
        + f"![Fig. 6: training (dashed) and {report.eval_label(recipe)} (bold) error]"
          f"({os.path.basename(plot)})\n"
    )
    return markdown, {"nets": nets_json, "findings": findings, "plots": [plot]}
