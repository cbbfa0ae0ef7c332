"""Recipes: the paper's numbers, the learning-rate schedules at their boundaries (also as the
optimizer applies them), scaling, overrides from flag strings, JSON round trips."""

import json
import os

import keras
import numpy as np
import pytest

import subprocess
import sys

from train import recipes, schedules
from train.recipes import PAPER_CIFAR, PAPER_CIFAR110, PAPER_IMAGENET, MODERN, SMOKE


def lr_at(schedule, *steps):
    return [float(schedule(s)) for s in steps]


def test_paper_cifar_numbers():
    """He et al. 2016, sec. 4.2."""
    r = PAPER_CIFAR
    assert (r.batch_size, r.momentum, r.lr, r.weight_decay) == (128, 0.9, 0.1, 1e-4)
    assert (r.lr_boundaries, r.steps, r.total_steps) == ((32_000, 48_000), 64_000, 64_000)
    assert (r.optimizer, r.nesterov, r.augment, r.label_smoothing) == ("sgd", False, "cifar", 0)
    assert PAPER_CIFAR110.model == "resnet110" and PAPER_CIFAR110.warmup_steps == 400
    r = PAPER_IMAGENET
    assert (r.batch_size, r.lr, r.weight_decay, r.steps, r.lr_schedule) == (
        256, 0.1, 1e-4, 600_000, "plateau")
    assert (r.model, r.augment, r.image_size) == ("resnet50", "imagenet", 224)


def test_paper_cifar_schedule_hits_the_boundaries():
    """lr 0.1, divided by 10 at 32k and at 48k iterations: iteration 32,000 (0-based) is the
    first at 0.01."""
    schedule = schedules.learning_rate(PAPER_CIFAR)
    got = lr_at(schedule, 0, 31_999, 32_000, 47_999, 48_000, 63_999)
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_resnet110_warmup():
    """lr 0.01 for the first 400 iterations, then 0.1 (sec. 4.2)."""
    schedule = schedules.learning_rate(PAPER_CIFAR110)
    got = lr_at(schedule, 0, 399, 400, 31_999, 32_000, 48_000)
    np.testing.assert_allclose(got, [0.01, 0.01, 0.1, 0.1, 0.01, 0.001], rtol=1e-6)


def test_optimizer_applies_the_boundary_at_the_right_update():
    """What keras.optimizers.SGD does with the schedule: the update after 32,000 updates
    moves by 0.01 * gradient, the one before by 0.1 * gradient."""
    # momentum 0: one update
    optimizer = keras.optimizers.SGD(schedules.learning_rate(PAPER_CIFAR))
    w = keras.Variable(np.zeros(1, np.float32))
    optimizer.build([w])
    moves = []
    for iteration in (31_999, 32_000, 47_999, 48_000):
        optimizer.iterations.assign(iteration)
        before = w.numpy().copy()
        optimizer.apply([np.ones(1, np.float32)], [w])
        moves.append(float(before[0] - w.numpy()[0]))
    np.testing.assert_allclose(moves, [0.1, 0.01, 0.01, 0.001], rtol=1e-5)


def test_scale_shortens_every_iteration_count():
    r = recipes.resolve("paper_cifar", warmup_steps=400, scale=0.05)
    assert (r.total_steps, r.boundaries, r.warmup_iterations) == (3_200, (1_600, 2_400), 20)
    np.testing.assert_allclose(lr_at(schedules.learning_rate(r), 19, 20, 1_599, 1_600, 2_400),
                               [0.01, 0.1, 0.1, 0.01, 0.001], rtol=1e-6)
    # The paper's ResNet-110 warm-up lasts "until training error is below 80% (about 400
    # iterations)" however long the run: kept under scale, capped at a tenth of the run.
    r = recipes.resolve("paper_cifar110", scale=0.05)
    assert (r.total_steps, r.boundaries, r.warmup_iterations) == (3_200, (1_600, 2_400), 320)
    np.testing.assert_allclose(lr_at(schedules.learning_rate(r), 319, 320, 1_599, 1_600),
                               [0.01, 0.1, 0.1, 0.01], rtol=1e-6)
    assert recipes.resolve("paper_cifar110", scale=0.5).warmup_iterations == 400
    assert recipes.resolve("paper_cifar110", scale=2.0).warmup_iterations == 400
    assert (SMOKE.total_steps, SMOKE.boundaries) == (400, (200, 300))
    with pytest.raises(ValueError, match="merges lr_boundaries"):
        recipes.resolve("paper_cifar", scale=1e-5)


def test_modern_linear_scaling_warmup_cosine():
    r = MODERN
    assert r.peak_lr == pytest.approx(0.1 * 512 / 256)
    got = lr_at(schedules.learning_rate(r), 0, 250, 500, 500 + (20_000 - 500) // 2, 20_000)
    np.testing.assert_allclose(got, [0.0, 0.1, 0.2, 0.1, 0.0], atol=1e-6)
    doubled = r.replace(batch_size=1024)
    assert doubled.peak_lr == pytest.approx(0.4)
    assert (r.label_smoothing, r.nesterov) == (0.1, True)


def test_schedules_serialize():
    for recipe in (PAPER_CIFAR110, MODERN):
        schedule = schedules.learning_rate(recipe)
        config = keras.optimizers.schedules.serialize(schedule)
        clone = keras.optimizers.schedules.deserialize(json.loads(json.dumps(config)))
        assert type(clone) is type(schedule)
        steps = (0, 399, 400, 10_000, 32_000, 50_000)
        np.testing.assert_allclose(lr_at(clone, *steps), lr_at(schedule, *steps))
    optimizer = keras.optimizers.SGD(schedules.learning_rate(PAPER_CIFAR), momentum=0.9)
    clone = keras.optimizers.SGD.from_config(optimizer.get_config())
    assert float(clone.learning_rate) == pytest.approx(0.1)


def test_overrides_from_strings():
    r = recipes.resolve("paper_cifar", steps="2000", lr_boundaries="1000,1500", lr="0.05",
                        synchronized_bn="true", xla="false", image_size="none",
                        model="resnet56", nesterov="yes")
    assert (r.steps, r.lr_boundaries, r.lr, r.synchronized_bn) == (2000, (1000, 1500), 0.05, True)
    assert (r.xla, r.image_size, r.model, r.nesterov) == ("off", None, "resnet56", True)
    assert recipes.resolve("Paper-CIFAR") == PAPER_CIFAR
    assert recipes.resolve(PAPER_CIFAR, seed=3).seed == 3


def test_json_round_trip_and_diff():
    r = recipes.resolve("modern", batch_size=256, synchronized_bn=False)
    assert recipes.Recipe.from_json(r.to_json()) == r
    assert json.loads(r.to_json())["lr_boundaries"] == []
    assert MODERN.diff(r) == {"batch_size": (512, 256), "synchronized_bn": (None, False)}
    with pytest.raises(ValueError, match="unknown recipe field"):
        recipes.Recipe.from_dict({**r.to_dict(), "learning_rate": 0.1})


@pytest.mark.parametrize("overrides,message", [
    ({"lr_schedule": "step"}, "lr_schedule='step' is not one of"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"steps": "1.5"}, "steps='1.5' is not a valid int"),
    ({"lr_boundaries": (48_000, 32_000)}, "lr_boundaries must be increasing"),
    ({"momentum": 1.0}, "momentum must be in"),
    ({"mixed_precision": "fp16"}, "mixed_precision='fp16' is not one of"),
    ({"learning_rate": 0.1}, "unknown recipe field 'learning_rate'"),
    ({"nesterov": "maybe"}, "nesterov='maybe' is not a valid bool"),
])
def test_bad_overrides_raise(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        recipes.resolve("paper_cifar", **overrides)


def test_unknown_recipe_raises():
    with pytest.raises(ValueError, match=r"unknown recipe 'paper_cifar10': use one of"):
        recipes.resolve("paper_cifar10")


def test_every_recipe_states_its_own_steps_so_steps_means_steps():
    for recipe in recipes.RECIPES.values():
        assert recipe.scale == 1.0, recipe.name
    r = recipes.resolve("smoke", steps="300")
    assert r.total_steps == 300 and r.boundaries == (200, 300)
    assert recipes.resolve("smoke", steps=300, scale=0.5).total_steps == 150


def test_a_run_that_stops_before_its_lr_drops_is_warned_about():
    assert recipes.resolve("smoke").warnings() == []
    (warning,) = recipes.resolve("smoke", steps="250").warnings()
    assert "step 250" in warning and "[300]" in warning
    assert recipes.resolve("smoke", steps=250, lr_boundaries=(100, 200)).warnings() == []
    assert recipes.resolve("fast", steps=1000).warnings() == []  # linear decay: no drops
    assert recipes.resolve("smoke", steps=250, lr_schedule="cosine").warnings() == []


def test_linear_decay_schedule():
    r = recipes.resolve("smoke", lr_schedule="linear", lr_boundaries=(), warmup_steps=40,
                        warmup="linear", warmup_lr=0.0, steps=400, lr=0.4)
    got = lr_at(schedules.learning_rate(r), 0, 20, 40, 220, 400)
    np.testing.assert_allclose(got, [0.0, 0.2, 0.4, 0.2, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="longer than its warm-up"):
        recipes.resolve("smoke", lr_schedule="linear", lr_boundaries=(), warmup_steps=500)


def test_recipes_import_without_tensorflow():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys, train.recipes, train.rundir; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
