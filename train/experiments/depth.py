"""Deeper ResNets on CIFAR-sized data (He et al. 2016, sec. 4.2, Table 6 and Fig. 7):
ResNet-20/32/44/56/110 test error beside the paper's, and the layer responses (std of each 3x3
layer's BN output) of plain-20/56 and ResNet-20/56/110.

ResNet-110 trains 5 times with the warm-up recipe (`paper_cifar110`): the paper reports its
best and mean±std.
"""

import os

from train.experiments import degradation, report, responses, runner

NAME = "depth"
TITLE = "Deeper ResNets (sec. 4.2, Table 6) and layer responses (Fig. 7)"
MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain56")
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
"""Table 6: CIFAR-10 test error (%); ResNet-110 is the best of 5 runs."""
PAPER_TABLE6_110_MEAN_STD = (6.61, 0.16)
PAPER_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M"}
SEEDS = {"resnet110": 5}


def nets(config: runner.Config) -> list:
    """Table 6's ResNets and Fig. 7's plain nets, or `config.models`."""
    return [runner.net_for(m, seeds=SEEDS.get(m, 1)) for m in (config.models or MODELS)]


def _paper(net) -> str:
    if net.plain or net.depth not in PAPER_TABLE6:
        return "-"
    if net.depth == 110:
        return f"{PAPER_TABLE6[110]:.2f} ({PAPER_TABLE6_110_MEAN_STD[0]:.2f}±" \
               f"{PAPER_TABLE6_110_MEAN_STD[1]:.2f})"
    return f"{PAPER_TABLE6[net.depth]:.2f}"


def plot_test_error(nets_json, path: str) -> str:
    """Test error against depth: ours (best and mean±std over seeds) and Table 6's."""
    from matplotlib.ticker import NullLocator

    fig = report.figure(figsize=(6, 4))
    ax = fig.subplots()
    ours = sorted((n for n in nets_json if not n["plain"]), key=lambda n: n["depth"])
    depths = [n["depth"] for n in ours]
    ax.errorbar(depths, [n["test_error_pct"]["mean"] for n in ours],
                yerr=[n["test_error_pct"]["std"] for n in ours], marker="o", capsize=3,
                label="ours (mean ± std over seeds)")
    ax.plot(depths, [n["test_error_pct"]["best"] for n in ours], "s", mfc="none",
            label="ours (best)")
    paper = sorted(PAPER_TABLE6.items())
    ax.plot([d for d, _ in paper], [e for _, e in paper], "k--", marker="^",
            label="paper, Table 6 (CIFAR-10)")
    for n in nets_json:
        if n["plain"]:
            ax.plot([n["depth"]], [n["test_error_pct"]["mean"]], "x", ms=8,
                    label=report.pretty_net(n["net"]))
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sorted(set(depths) | set(PAPER_TABLE6)))
    ax.set_xticklabels([str(d) for d in sorted(set(depths) | set(PAPER_TABLE6))])
    ax.set_xlabel("layers")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return report.save_figure(fig, path)


def _values(text: str) -> str:
    return f" ({text})" if text else ""


def _verdict(holds) -> str:
    return {True: "**holds**", False: "**does not hold**", None: "n/a"}[holds]


def report_runs(records, config: runner.Config, root: str, data_dir=None) -> tuple:
    """Table 6 beside ours, Fig. 7 from each net's first seed, and their findings."""
    grouped = report.by_net(records)
    table, nets_json = [], []
    for label, runs in grouped.items():
        net = runs[0].net
        test = report.stats(r.test_error for r in runs)
        table.append([report.pretty_net(label), net.depth, report.params(runs),
                      report.format_stat(test, best=True), len(runs), _paper(net),
                      PAPER_PARAMS.get(net.depth, "-") if not net.plain else "-"])
        nets_json.append({"net": label, "plain": net.plain, "depth": net.depth,
                          "params": runs[0].summary.get("params"), "test_error_pct": test,
                          "paper_table6_pct": None if net.plain else PAPER_TABLE6.get(net.depth)})

    stds = {label: responses.run_responses(runs[0], config.num_eval_images, data_dir)
            for label, runs in grouped.items()}
    for n in nets_json:
        n["layer_response_std"] = [round(s, 5) for s in stds[n["net"]]]
        n["layer_response_std_mean"] = round(sum(stds[n["net"]]) / len(stds[n["net"]]), 5)
    mean_std = {n["net"]: n["layer_response_std_mean"] for n in nets_json}

    resnets = [(n["depth"], n["test_error_pct"]["mean"]) for n in nets_json if not n["plain"]]
    pairs = [(d, mean_std[f"plain{d}"], mean_std[f"resnet{d}"]) for d, _ in sorted(resnets)
             if f"plain{d}" in mean_std]
    resnet_means = [(d, mean_std[f"resnet{d}"]) for d, _ in sorted(resnets)]
    findings = {
        "deeper_resnet_lower_test_error": degradation.ordering(resnets, "lower"),
        "resnet_responses_smaller_than_plain": all(r < p for _, p, r in pairs) if pairs else None,
        "deeper_resnet_smaller_responses": degradation.ordering(resnet_means, "lower"),
    }
    plots = [plot_test_error(nets_json, os.path.join(root, "test_error.png")),
             responses.plot_responses(stds, os.path.join(root, "layer_responses.png"))]

    recipe = records[0].spec.recipe
    response_table = report.markdown_table(
        ["net", "3x3 layers", "mean std", "max std", "min std"],
        [[report.pretty_net(k), len(v), f"{sum(v) / len(v):.4g}", f"{max(v):.4g}",
          f"{min(v):.4g}"] for k, v in stds.items()])
    markdown = (
        f"# {TITLE}\n\n"
        f"{config.dataset}, {records[0].steps} iterations ({config.size}), batch "
        f"{recipe.batch_size}; ResNet-110 and deeper with the warm-up recipe. Test error: on "
        f"{runner.test_split(recipe)}; several runs: best (mean±std). Paper: CIFAR-10, "
        "Table 6.\n\n"
        + report.markdown_table(["net", "layers", "params", "test error (%)", "runs",
                                 "paper (%)", "paper params"], table)
        + f"\n- deeper ResNets -> lower test error: "
          f"{_verdict(findings['deeper_resnet_lower_test_error'])}"
        + _values(", ".join(f"{d}: {e:.2f}" for d, e in sorted(resnets))) + "\n\n"
        + "![test error against depth](test_error.png)\n\n"
        + "## Layer responses (Fig. 7)\n\n"
        f"Std of each 3x3 layer's output after BN, before addition and ReLU, over all "
        f"elements, on the first {config.num_eval_images} test images (inference mode; each "
        "net's seed-0 run).\n\n" + response_table
        + f"\n- ResNets respond less than plain nets of the same depth: "
          f"{_verdict(findings['resnet_responses_smaller_than_plain'])}"
        + _values("; ".join(f"{d}: plain {p:.4g}, ResNet {r:.4g}" for d, p, r in pairs))
        + f"\n- deeper ResNets -> smaller responses: "
          f"{_verdict(findings['deeper_resnet_smaller_responses'])}"
        + _values(", ".join(f"{d}: {m:.4g}" for d, m in resnet_means))
        + "\n\n![Fig. 7: std of layer responses](layer_responses.png)\n"
    )
    return markdown, {"nets": nets_json, "findings": findings, "plots": plots}
