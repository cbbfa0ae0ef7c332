"""Recipes: the paper's numbers, the learning-rate schedules at their boundaries (also as the
optimizer applies them), scaling, overrides from flag strings, JSON round trips."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from train import recipes, schedules
from train.recipes import MODERN, PAPER_CIFAR, PAPER_CIFAR110, PAPER_IMAGENET, SMOKE


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


# ------------------------------------------------------------ transfer, phases and epochs


def test_old_recipe_json_loads_with_the_new_fields_at_their_defaults():
    """recipe.json files written before weights/phases/epochs existed (the shipped
    results/time-to-accuracy runs) load, equal today's recipe, and resolve to themselves."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(repo, "results", "time-to-accuracy", "quickstart-seed2", "recipe.json")
    with open(path) as f:
        saved = json.load(f)
    assert "weights" not in saved and "epochs" not in saved
    r = recipes.Recipe.from_dict(saved)
    assert r == recipes.QUICKSTART.replace(seed=2)
    assert (r.weights, r.epochs, r.head_steps, r.freeze_bn, r.phase_boundaries) == (
        "none", 0.0, 0, False, ())
    assert r.resolved(60_000) is r


def test_existing_recipes_schedules_are_unchanged_by_the_phase_machinery():
    """No recipe but finetune has a phase; their schedules are the plain classes, as before."""
    for recipe in recipes.RECIPES.values():
        if recipe.name != "finetune":
            assert recipe.phase_boundaries == () and not recipe.freeze_bn, recipe.name
            assert recipe.weights == "none" and recipe.epochs == 0, recipe.name
            assert not isinstance(schedules.learning_rate(recipe), schedules.HeadThen)


@pytest.mark.parametrize("images,steps,head,warmup", [
    (500, 125, 32, 16),          # 15.625 batches of 32 an epoch: 8, 2 and 1 epochs, rounded up
    (50_000, 12_500, 3_125, 1_563),
    (4_000, 1_000, 250, 125),
    (400, 100, 25, 13),          # 8 epochs of 12.5 batches: exactly min_steps
    (80, 100, 25, 13),           # 8 epochs would be 20 steps: min_steps (100) stretches the run,
    (10, 100, 25, 13),           # head and warm-up keep their share of it (2/8, 1/8, rounded up)
])
def test_finetune_epochs_resolve_to_steps(images, steps, head, warmup):
    plan = recipes.FINETUNE.resolved(images)
    assert (plan.total_steps, plan.head_iterations, plan.warmup_iterations) == (steps, head, warmup)
    assert plan.phase_boundaries == (head,) and plan.epochs == 0 and plan.resolved(1) is plan
    assert recipes.FINETUNE.phase_boundaries == ()  # unresolved: the boundary needs the data


def test_finetune_learning_rate_by_phase():
    """Head phase at head_lr (linearly scaled: 0.1 * 32 / 256), then the whole net's warm-up
    from 0 and cosine decay to 0, both counted from the phase boundary; also as the optimizer
    applies it, and serialized."""
    plan = recipes.FINETUNE.resolved(500)  # 125 steps, head 32, warm-up 16
    schedule = schedules.learning_rate(plan)
    head, peak = 0.1 * 32 / 256, 0.05 * 32 / 256
    whole = 125 - 32
    t = (100 - 32 - 16) / (whole - 16)
    np.testing.assert_allclose(
        lr_at(schedule, 0, 31, 32, 40, 48, 100, 125),
        [head, head, 0.0, peak / 2, peak, peak * (1 + np.cos(np.pi * t)) / 2, 0.0], atol=1e-7)
    clone = keras.optimizers.schedules.deserialize(
        json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule))))
    np.testing.assert_allclose(lr_at(clone, 0, 32, 40, 100), lr_at(schedule, 0, 32, 40, 100))


@pytest.mark.parametrize("overrides,message", [
    ({"head_epochs": 1.0, "head_steps": 5}, "both set the same length"),
    ({"epochs": 2.0, "head_epochs": 2.0}, "head_epochs (2.0) must be shorter"),
    ({"epochs": 0.0, "head_epochs": 1.0}, "need a length in epochs"),
    ({"epochs": 4.0, "lr_schedule": "piecewise", "lr_boundaries": (10,)}, "count steps"),
    ({"lr_schedule": "plateau", "warmup_epochs": 0.0}, "head-only phase needs lr_schedule"),
    ({"weights_normalization": "bgr"}, "weights_normalization='bgr' is not one of"),
    ({"bad_images": "ignore"}, "bad_images='ignore' is not one of"),
    ({"holdout": 0.0}, "holdout must be in (0, 1)"),
    ({"crop_fraction": 1.5}, "crop_fraction must be None or in (0, 1]"),
    ({"epochs": "-1"}, "epochs must be >= 0"),
    ({"weights": ""}, "weights must be a non-empty string"),
])
def test_bad_transfer_fields_raise(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        recipes.resolve("finetune", **overrides)


def test_step_based_head_phase_must_end_before_the_run():
    r = recipes.resolve("finetune", epochs=0, head_epochs=0, warmup_epochs=0, steps=100,
                        head_steps=30, warmup_steps=10)
    assert (r.phase_boundaries, r.total_steps, r.resolved(10) is r) == ((30,), 100, True)
    with pytest.raises(ValueError, match="head-only phase .100 steps. must end"):
        r.replace(head_steps=100)
    with pytest.raises(ValueError, match=r"after 30 head-only steps\) must be longer"):
        r.replace(warmup_steps=70)


def test_transfer_fields_from_flag_strings():
    r = recipes.resolve("finetune", weights="/data/model.keras", weights_normalization="torch",
                        crop_fraction="0.95", epochs="3", head_epochs="0.5", freeze_bn="no",
                        holdout="0.25", bad_images="fail", head_lr="1")
    assert (r.weights, r.weights_normalization, r.crop_fraction) == (
        "/data/model.keras", "torch", 0.95)
    assert (r.epochs, r.head_epochs, r.freeze_bn, r.holdout, r.bad_images, r.head_lr) == (
        3.0, 0.5, False, 0.25, "fail", 1.0)
    assert recipes.resolve("finetune", crop_fraction="none").crop_fraction is None
    assert recipes.Recipe.from_json(r.to_json()) == r


def test_weights_normalization_names_are_the_transfer_modules():
    from keras_resnet.weights import transfer

    assert set(recipes.WEIGHTS_NORMALIZATIONS) == {"auto", *transfer.NORMALIZATION_MODES}


def test_with_steps_keeps_the_phases_share():
    """--steps=N on the finetune recipe: 8 epochs with 2 head-only and 1 of warm-up become N
    steps with a quarter head-only and an eighth of warm-up; step-based recipes just change
    steps."""
    r = recipes.FINETUNE.with_steps("400")
    assert (r.total_steps, r.phase_boundaries, r.warmup_iterations, r.epochs) == (
        400, (100,), 50, 0.0)
    assert recipes.SMOKE.with_steps(300) == recipes.resolve("smoke", steps=300)


def test_finetune_without_weights_plans_a_run_from_scratch():
    """weights='none' (issue 21's baseline): the plan drops the head-only phase and freeze_bn,
    so it equals the plan of the recipe written without them (the whole run on the same
    schedule, from step 0); the recipe as given (recipe.json) keeps them; the warning says so.
    With weights the plan keeps its phases."""
    assert recipes.FINETUNE.warnings() == []
    assert recipes.FINETUNE.resolved(500).phase_boundaries == (32,)
    scratch = recipes.resolve("finetune", weights="none")
    plan = scratch.resolved(500)  # 125 steps, warm-up 16
    by_hand = recipes.resolve("finetune", weights="none", head_epochs=0, freeze_bn=False)
    assert plan == by_hand.resolved(500) and by_hand.warnings() == []
    assert (plan.total_steps, plan.phase_boundaries, plan.freeze_bn, plan.warmup_iterations) == (
        125, (), False, 16)
    assert plan.resolved(1) is plan
    assert (scratch.head_epochs, scratch.freeze_bn) == (2.0, True)
    assert recipes.Recipe.from_json(scratch.to_json()) == scratch
    schedule = schedules.learning_rate(plan)
    assert not isinstance(schedule, schedules.HeadThen)
    peak = 0.05 * 32 / 256
    np.testing.assert_allclose(lr_at(schedule, 0, 8, 16, 125), [0.0, peak / 2, peak, 0.0],
                               atol=1e-7)
    (warning,) = scratch.warnings()
    assert "its plan drops the head-only phase (head_epochs=2.0) and freeze_bn" in warning
    assert "every layer trains from step 0" in warning
    steps = recipes.resolve("finetune", weights="none", epochs=0, head_epochs=0, warmup_epochs=0,
                            steps=60, head_steps=15, warmup_steps=5, freeze_bn=False)
    (warning,) = steps.warnings()
    assert "drops the head-only phase (head_steps=15)," in warning
    assert steps.resolved(10) == steps.replace(head_steps=0)
