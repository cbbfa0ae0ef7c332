"""Tests of train.experiments: each experiment end to end at a tiny size (4 iterations of
8-layer nets on a 48-image folder dataset), its results files, reuse of finished runs, and the
layer responses against a hand-computed BatchNorm."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resnet
import train.experiments as experiments
from train.experiments import Config, degradation, report, responses, runner

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Not deterministic: op determinism is process-wide and would stay on for later tests.
TINY = {"batch_size": 8, "image_size": 32, "eval_every": 2, "log_every": 1,
        "checkpoint_every": 4, "deterministic": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """folder:<root> with 2 classes of 32x32 RGB PNGs: 16 train and 8 test images each."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        for c in range(2):
            os.makedirs(root / split / f"c{c}")
            for i in range(n):
                image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                image[..., c] = 255
                tf.io.write_file(str(root / split / f"c{c}" / f"{i}.png"),
                                 tf.io.encode_png(image))
    return f"folder:{root}"


def tiny(folder, **kwargs):
    return Config(dataset=folder, steps=4, overrides=TINY, eval_images=16, **kwargs)


def check_common(results, name, num_runs):
    assert results["experiment"] == name
    assert results["steps"] == 4 and len(results["runs"]) == num_runs
    with open(results["results_json"]) as f:
        assert json.load(f)["experiment"] == name
    for path in results["plots"]:
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == PNG_MAGIC and os.path.getsize(path) > 5000, path
    for run in results["runs"]:
        assert 0 <= run["test_error_pct"] <= 100 and 0 <= run["train_error_pct"] <= 100
        assert os.path.exists(os.path.join(run["run_dir"], "model.keras"))
    with open(results["results_md"]) as f:
        return f.read()


def table_rows(markdown):
    """Body rows of the first Markdown table, as lists of cells."""
    block = next(b for b in markdown.split("\n\n") if b.startswith("|"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


# ---------------------------------------------------------------------------- end to end


def test_degradation(folder, tmp_path):
    models = ("plain8", "plain14", "resnet8", "resnet14")
    results = experiments.run("degradation", str(tmp_path), tiny(folder, models=models),
                              verbose=0)
    md = check_common(results, "degradation", 4)
    rows = table_rows(md)
    assert [r[0] for r in rows] == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert [r[1] for r in rows] == ["8", "14", "8", "14"]
    assert set(results["findings"]) == {"plain_deeper_higher_train_error",
                                        "resnet_deeper_lower_train_error",
                                        "resnet_lower_train_error_than_plain_at_each_depth"}
    for net in results["nets"]:
        plain = [n for n in results["nets"] if n["plain"] == net["plain"]]
        errors = sorted((n["depth"], n["train_error_pct"]["mean"]) for n in plain)
        expected = all(b[1] > a[1] for a, b in zip(errors, errors[1:])) if net["plain"] else \
            all(b[1] < a[1] for a, b in zip(errors, errors[1:]))
        key = "plain_deeper_higher_train_error" if net["plain"] else \
            "resnet_deeper_lower_train_error"
        assert results["findings"][key] is expected
    assert "- plain nets, deeper -> higher training error: **" in md
    assert "- ResNets, deeper -> lower training error: **" in md
    assert os.path.basename(results["plots"][0]) == "degradation.png"
    # Each run's final training error is its logged training error (1 - accuracy).
    run = results["runs"][0]
    with open(os.path.join(run["run_dir"], "metrics.csv")) as f:
        last = [l for l in f.read().splitlines() if l.startswith("4,")][-1].split(",")
    assert abs(run["train_error_pct"] - 100 * (1 - float(last[3]))) < 1e-3

    # The same command again, through the CLI, reuses the finished runs: nothing retrains.
    mtimes = {r["run_dir"]: os.path.getmtime(os.path.join(r["run_dir"], "model.keras"))
              for r in results["runs"]}
    argv = [sys.executable, "-m", "train.experiments", "degradation", f"--dataset={folder}",
            "--steps=4", f"--models={','.join(models)}", f"--run_dir={tmp_path}", "--verbose=0"]
    argv += [f"--set={k}={v}" for k, v in TINY.items()]
    done = subprocess.run(argv, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ResNet-14 | 14 |" in done.stdout and "results:" in done.stdout
    with open(os.path.join(tmp_path, "results.json")) as f:
        again = json.load(f)
    assert [r["test_error_pct"] for r in again["runs"]] == \
        [r["test_error_pct"] for r in results["runs"]]
    assert all(os.path.getmtime(os.path.join(d, "model.keras")) == t for d, t in mtimes.items())


def cli_env():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def test_shortcuts(folder, tmp_path):
    results = experiments.run("shortcuts", str(tmp_path), tiny(folder, models=("resnet8",)),
                              verbose=0)
    md = check_common(results, "shortcuts", 3)
    rows = table_rows(md)
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("ResNet-8", "A", "25.03"), ("ResNet-8", "B", "24.52"), ("ResNet-8", "C", "24.19")]
    params = [n["params"] for n in results["nets"]]
    assert params[0] < params[1] < params[2]  # projections add parameters: A < B < C
    # Option B projects only where the shape changes (2 of 3 blocks of ResNet-8), C everywhere.
    for run, projections in zip(results["runs"], (0, 2, 3)):
        model = keras.saving.load_model(os.path.join(run["run_dir"], "model.keras"),
                                        compile=False)
        assert sum(l.name.endswith("_0_conv") for l in model.layers) == projections


def test_depth(folder, tmp_path):
    config = tiny(folder, models=("resnet8", "plain8"), seeds=2)
    results = experiments.run("depth", str(tmp_path), config, verbose=0)
    md = check_common(results, "depth", 4)
    rows = table_rows(md)
    assert [r[0] for r in rows] == ["ResNet-8", "plain-8"]
    resnet = results["nets"][0]
    errors = [r["test_error_pct"] for r in results["runs"] if r["net"] == "resnet8"]
    assert resnet["test_error_pct"]["n"] == 2
    assert resnet["test_error_pct"]["best"] == pytest.approx(min(errors), abs=1e-3)
    assert resnet["test_error_pct"]["mean"] == pytest.approx(np.mean(errors), abs=1e-3)
    assert resnet["test_error_pct"]["std"] == pytest.approx(np.std(errors, ddof=1), abs=1e-3)
    assert "±" in rows[0][3]  # best (mean±std)
    # Fig. 7: one std per 3x3 layer (stem + 2 per block: 1 + 2 * 3 for 8 layers).
    for net in results["nets"]:
        assert len(net["layer_response_std"]) == 7
        assert all(s > 0 for s in net["layer_response_std"])
    assert set(results["findings"]) == {"deeper_resnet_lower_test_error",
                                        "resnet_responses_smaller_than_plain",
                                        "deeper_resnet_smaller_responses"}
    assert sorted(os.path.basename(p) for p in results["plots"]) == ["layer_responses.png",
                                                                     "test_error.png"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("name,nets", [
    ("degradation", ["plain-20", "plain-32", "plain-44", "plain-56", "ResNet-20", "ResNet-32",
                     "ResNet-44", "ResNet-56"]),
    ("shortcuts", ["ResNet-20"] * 3),
    ("depth", ["ResNet-20", "ResNet-32", "ResNet-44", "ResNet-56", "ResNet-110", "plain-20",
               "plain-56"]),
])
def test_smoke_size_on_fashion_mnist(name, nets, tmp_path):
    """The --smoke size with the paper's nets (minutes each on 2 CPU cores)."""
    results = experiments.run(name, str(tmp_path), Config(smoke=True), verbose=0)
    with open(results["results_md"]) as f:
        assert [r[0] for r in table_rows(f.read())] == nets
    assert results["steps"] == runner.SMOKE_STEPS and results["dataset"] == "fashion_mnist"
    assert all(os.path.getsize(p) > 5000 for p in results["plots"])


def test_depth_table_holds_the_paper_numbers():
    specs = experiments.plan("depth", "/nonexistent", Config())
    names = [s.name for s in specs]
    assert names[:5] == [f"resnet{d}-seed0" for d in (20, 32, 44, 56, 110)]
    assert names.count("resnet110-seed0") == 1 and "resnet110-seed4" in names  # best of 5
    assert all(s.recipe.name == ("paper_cifar110" if s.net.depth == 110 else "paper_cifar")
               for s in specs)
    from train.experiments import depth

    assert [depth.PAPER_TABLE6[d] for d in (20, 32, 44, 56, 110)] == [8.75, 7.51, 7.17, 6.97,
                                                                      6.43]
    # What the report's "paper (%)" column prints: ResNet-110 as Table 6 does, best (mean±std).
    assert [depth._paper(runner.net_for(m)) for m in ("resnet20", "resnet110", "plain20")] == \
        ["8.75", "6.43 (6.61±0.16)", "-"]


# ------------------------------------------------------------------------ pieces and errors


def test_sizes_scale_the_paper_schedule():
    net = runner.net_for("resnet20")
    full = runner.recipe_for(net, 0, Config())
    assert (full.total_steps, full.boundaries, full.batch_size) == (64000, (32000, 48000), 128)
    smoke = runner.recipe_for(net, 3, Config(smoke=True))
    assert (smoke.total_steps, smoke.boundaries, smoke.seed) == (40, (20, 30), 3)
    assert runner.test_split(smoke) == runner.SMOKE_EVAL_SPLIT == smoke.eval_split
    custom = runner.recipe_for(net, 0, Config(steps=2000, overrides={"eval_split": "test[:10]"}))
    assert (custom.total_steps, custom.boundaries, custom.eval_split) == (2000, (1000, 1500),
                                                                         "test[:10]")
    # ResNet-110's warm-up (sec. 4.2, ~400 iterations) is not shrunk with the schedule.
    assert runner.recipe_for(runner.net_for("resnet110"), 0,
                             Config(steps=2000)).warmup_iterations == 200
    assert runner.recipe_for(runner.net_for("resnet110"), 0,
                             Config(steps=8000)).warmup_iterations == 400
    assert runner.recipe_for(runner.net_for("resnet110"), 0,
                             Config(smoke=True)).warmup_iterations == 4


@pytest.mark.parametrize("call,message", [
    (lambda: experiments.get("degredation"), "unknown experiment 'degredation': use one of"),
    (lambda: experiments.plan("depth", "/x", Config(models=("resnet21",))), "6n+2"),
    (lambda: experiments.plan("depth", "/x", Config(models=("resnet50x",))), "resnetN"),
    (lambda: experiments.plan("shortcuts", "/x", Config(models=("plain20",))), "no shortcuts"),
    (lambda: Config(steps=2), "steps must be an int >= 4"),
    (lambda: Config(seeds=0), "seeds must be a positive int"),
    (lambda: Config(overrides={"batchsize": 3}), "unknown recipe field 'batchsize'"),
    (lambda: Config(overrides={"model": "resnet8"}), "use --models"),
])
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_stats_and_table():
    s = report.stats([6.43, 6.8, 6.6])
    assert (s["best"], s["n"]) == (6.43, 3)
    assert s["std"] == pytest.approx(np.std([6.43, 6.8, 6.6], ddof=1), abs=1e-4)
    assert report.format_stat(s, best=True) == f"6.43 ({s['mean']:.2f}±{s['std']:.2f})"
    assert report.format_stat(report.stats([7.5])) == "7.50"
    assert report.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert report.pretty_net("resnet20-B") == "ResNet-20 (B)"


def test_layer_responses_match_hand_computed_batchnorm():
    keras.utils.set_random_seed(1)
    model = keras_resnet.ResNet(8, cifar=True, weights=None, input_shape=(32, 32, 3), classes=4)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 1, c), rng.normal(0, 1, c),
                               rng.uniform(0.5, 2, c)])
    names = responses.response_layers(model)
    assert names == ["conv1_bn"] + [f"conv{s}_block1_{i}_bn" for s in (2, 3, 4) for i in (1, 2)]
    images = rng.uniform(0, 255, (10, 32, 32, 3)).astype("float32")
    stds = responses.layer_response_std(model, images, batch_size=4)
    for name in ("conv1_bn", "conv3_block1_2_bn"):
        bn = model.get_layer(name)
        conv = keras.Model(model.input, model.get_layer(name[:-3] + "_conv").output)
        x = np.asarray(conv(images), np.float64)
        gamma, beta, mean, var = bn.get_weights()
        y = (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
        assert stds[name] == pytest.approx(y.std(), rel=1e-4)


# ----------------------------------------------------- reports from synthetic run records


def _record(model, train_errors, test_error, tmp_path, steps=100):
    """A RunRecord of `model` whose logged training error goes through `train_errors`
    (%, one per step 1..steps, the last 10 of which form the final figure) and whose
    evaluation error is 2 points above it every 10 steps."""
    net = runner.net_for(model)
    recipe = runner.recipe_for(net, 0, Config(steps=steps))
    rows = [{"step": str(s), "train_accuracy": str(1 - e / 100),
             "eval_accuracy": str(1 - (e + 2) / 100) if s % 10 == 0 else ""}
            for s, e in zip(range(1, steps + 1), train_errors)]
    spec = runner.RunSpec(net, 0, recipe, str(tmp_path / model))
    return runner.RunRecord(spec, {"steps": steps, "test_error": test_error / 100,
                                   "params": 1000}, rows)


def _falling(start, end, steps=100):
    return list(np.linspace(start, end, steps))


def test_final_training_error_averages_the_last_tenth_of_the_run(tmp_path):
    errors = [90.0] * 90 + [10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0]
    record = _record("resnet20", errors, 9.0, tmp_path)
    assert record.train_error == pytest.approx(19.0)  # steps 91..100, not step 100's 28
    assert record.test_error == pytest.approx(9.0)


@pytest.mark.parametrize("paper_like", [True, False])
def test_degradation_findings_read_training_error_not_test_error(tmp_path, paper_like):
    """Training errors ordered as in Fig. 6 (or the reverse) with test errors in the opposite
    order: the findings follow the training errors."""
    final = {"plain20": 10.0, "plain56": 14.0, "resnet20": 8.0, "resnet56": 5.0}
    if not paper_like:
        final = {"plain20": 14.0, "plain56": 10.0, "resnet20": 5.0, "resnet56": 12.0}
    records = [_record(m, _falling(80, e), 30.0 - e, tmp_path) for m, e in final.items()]
    markdown, results = degradation.report_runs(records, Config(steps=100), str(tmp_path))
    assert results["findings"] == {
        "plain_deeper_higher_train_error": paper_like,
        "resnet_deeper_lower_train_error": paper_like,
        "resnet_lower_train_error_than_plain_at_each_depth": paper_like,
    }
    verdict = "**holds**" if paper_like else "**does not hold**"
    assert f"- plain nets, deeper -> higher training error: {verdict}" in markdown
    rows = {r[0]: r for r in table_rows(markdown)}
    tail = {m: np.mean(_falling(80, e)[90:]) for m, e in final.items()}
    assert rows["plain-56"][3] == f"{tail['plain56']:.2f}"
    assert rows["plain-56"][4] == f"{30.0 - final['plain56']:.2f}"


def test_degradation_plot_has_a_panel_per_family_it_trained(tmp_path, monkeypatch):
    panels = []
    monkeypatch.setattr(report, "plot_error_curves",
                        lambda p, path, label: panels.append([t for t, _ in p]) or path)
    resnets = [_record(m, _falling(80, 8.0), 9.0, tmp_path) for m in ("resnet20", "resnet32")]
    plain = [_record("plain20", _falling(80, 12.0), 13.0, tmp_path)]
    degradation.report_runs(resnets, Config(steps=100), str(tmp_path))
    degradation.report_runs(plain + resnets, Config(steps=100), str(tmp_path))
    assert panels == [["ResNets"], ["plain networks", "ResNets"]]


def test_fig6_plot_draws_training_dashed_and_test_bold_and_zooms_past_the_start(tmp_path):
    records = {m: [_record(m, [95.0] * 5 + _falling(40, e, 95), 9.0, tmp_path)]
               for m, e in (("resnet20", 12.0), ("resnet56", 8.0))}
    fig = report.error_curves_figure([("ResNets", records)])
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [(l.get_linestyle(), l.get_linewidth()) for l in lines] == [("--", 1.0), ("-", 2.5)] * 2
    train_line, eval_line = lines[0], lines[1]
    assert list(train_line.get_xdata()) == list(range(1, 101))
    assert list(eval_line.get_xdata()) == list(range(10, 101, 10))
    assert eval_line.get_label() == "ResNet-20"
    # The first iterations (95%) leave the plot; every error after the first tenth is on it.
    bottom, top = ax.get_ylim()
    assert bottom == 0 and 42.0 <= top < 60.0
    assert report.plot_error_curves([("ResNets", records)], str(tmp_path / "f.png"),
                                    "test") == str(tmp_path / "f.png")
