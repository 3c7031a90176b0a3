"""benchmarks/search.py: its CPU-time budget, its search space, a stopped sitting's trials, and its report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from facegan.config import from_preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_benchmark", ROOT / "benchmarks" / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_stops_at_the_epoch_end_nearest_it(search):
    clock = Clock()
    budget = search.CpuBudget(60.0, clock=clock)
    state = SimpleNamespace(epoch=0, batch_in_epoch=5)
    clock.now += 10
    assert not budget(state)  # mid-epoch, within the budget
    clock.now, state.epoch, state.batch_in_epoch = 125.0, 1, 0  # epochs of 25 s
    assert not budget(state)  # 25 spent: going on ends at 50, 10 under
    clock.now, state.epoch = 150.0, 2
    # 50 spent: going on would end at 75, 15 over; stopping now is 10 under (50 + 12.5 >= 60): stop.
    assert budget(state) and budget.spent == 50.0 and budget.epoch == 2


def test_the_budget_goes_on_while_stopping_would_undershoot_more(search):
    clock = Clock()
    budget = search.CpuBudget(60.0, clock=clock)
    clock.now += 20.0
    assert not budget(SimpleNamespace(epoch=1, batch_in_epoch=0))  # 20 + 10 < 60
    clock.now += 20.0
    assert not budget(SimpleNamespace(epoch=2, batch_in_epoch=0))  # 40 + 10 < 60
    clock.now += 20.0
    assert budget(SimpleNamespace(epoch=3, batch_in_epoch=0))  # 60 + 10 >= 60


def test_an_overrunning_epoch_is_cut_only_after_one_epoch_has_a_checkpoint(search):
    clock = Clock()
    budget = search.CpuBudget(10.0, clock=clock)
    clock.now += 100.0
    assert not budget(SimpleNamespace(epoch=0, batch_in_epoch=3))  # the first epoch always finishes
    assert budget(SimpleNamespace(epoch=1, batch_in_epoch=0))
    budget = search.CpuBudget(100.0, clock=clock)
    clock.now += 40.0
    assert not budget(SimpleNamespace(epoch=1, batch_in_epoch=0))  # 40 + 20 < 100
    clock.now += 100.0
    assert not budget(SimpleNamespace(epoch=1, batch_in_epoch=7))  # 140 spent: under 1.5 budgets
    clock.now += 10.0
    assert budget(SimpleNamespace(epoch=1, batch_in_epoch=8))  # 150: cut


def test_every_baseline_and_drawn_recipe_is_a_valid_config(search, tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for recipe in search.BASELINES:
        study.enqueue_trial(recipe)
    recipes = []
    for _ in range(len(search.BASELINES) + 20):
        trial = study.ask()
        recipes.append(search.suggest(trial))
        study.tell(trial, 0.0)
    assert recipes[: len(search.BASELINES)] == search.BASELINES  # enqueued recipes are tried as written
    assert {r["model"] for r in recipes} == {"dcgan", "resnet"}
    for recipe in recipes:
        config = from_preset("dcgan", data=str(tmp_path), **search.overrides(recipe))
        assert (config.g_width, config.d_width, config.betas) == (recipe["width"], recipe["width"], (recipe["beta1"], 0.999))
        assert (config.loss, config.batch_size, config.ema_kimg, config.augment) == (
            recipe["loss"], recipe["batch_size"], recipe["ema_kimg"], recipe["augment"])
    reference = from_preset("dcgan", data=str(tmp_path), **search.overrides(search.BASELINES[0]))
    # Trial 0 is the seeds' recipe, unchanged (spectral norm off by name, as the dcgan family's own None is).
    assert dataclasses.replace(reference, spectral_norm=None) == from_preset("dcgan", data=str(tmp_path))


def test_a_stopped_sitting_s_running_trials_are_tried_again(search, tmp_path):
    journal = tmp_path / "s.journal"
    study = search.open_study(journal)
    search.prepare_sitting(study)
    first = study.ask()  # the first baseline, left running as by a killed sitting
    search.suggest(first)
    again = search.open_study(journal)
    search.prepare_sitting(again)
    trials = again.get_trials(deepcopy=False)
    assert trials[first.number].state == TrialState.FAIL
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    # The killed recipe waits again, once; the baselines are not enqueued twice.
    enqueued = [t.system_attrs["fixed_params"] for t in waiting]
    assert len(waiting) == len(search.BASELINES) and enqueued[-1] == search.BASELINES[0]
    assert enqueued[:-1] == search.BASELINES[1:]


def test_the_results_file_and_its_report(search, tmp_path):
    study = optuna.create_study(direction="minimize")
    for number, (recipe, fid) in enumerate(zip(search.BASELINES[:3], (300.0, 200.0, 250.0))):
        study.enqueue_trial(recipe)
        trial = study.ask()
        search.suggest(trial)
        for key, value in {"steps": 100 * (number + 1), "images_per_cpu_s": 50.0, "fid1k": fid, "kid1k": 0.2,
                           "pr1k_precision": 0.1, "pr1k_recall": 0.01}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, fid)
    failed = study.ask()
    search.suggest(failed)
    failed.set_user_attr("error", "it diverged")
    study.tell(failed, state=TrialState.FAIL)
    args = argparse.Namespace(samples=1000, cpu_minutes=20.0, threads=1, precision="bf16", seed=0)
    search.write_results(study, tmp_path / "r.json", args)
    results = json.loads((tmp_path / "r.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["COMPLETE"] * 3 + ["FAIL"]
    assert results["settings"]["train_images"] == 7000
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.setattr(sys, "argv", ["search.py", "--report", "--results", str(tmp_path / "r.json"), "--best", "2"])
        search.main()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("celeba-89: 20 CPU-minutes per trial (1 thread(s), bf16)") and "3 trials finished of 4" in lines[0]
    rows = [line for line in lines if line[:5].strip().isdigit()]
    assert [int(r.split()[0]) for r in rows] == [1, 2]  # the best two, best first
    assert "the seeds' dcgan (trial 0): fid1k 300.0; best: trial 1, 200.0 (0.67x dcgan's)" in out.getvalue()
    assert "failed: 3: it diverged" in out.getvalue()


def test_the_fast_preset_is_the_searchs_best_finished_recipe_and_makes_64px_faces(search, tmp_path):
    """The preset is what the committed search measured best, nothing tuned beside it, and still 64x64 from scratch."""
    results = json.loads((ROOT / "benchmarks" / "results" / "search-celeba-89.json").read_text())
    best = min((t for t in results["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    recipe = search.recipe_of(best["params"])
    measured = from_preset("dcgan", data=str(tmp_path), **search.overrides(recipe))
    fast = from_preset("fast", data=str(tmp_path))
    assert dataclasses.replace(measured, preset="fast", spectral_norm=fast.spectral_norm) == fast
    import torch

    from facegan.train.state import build_state

    state = build_state(fast, 64, torch.device("cpu"))
    with torch.no_grad():
        assert state.generator.eval()(torch.randn(2, fast.latent_dim)).shape == (2, 3, 64, 64)


def test_a_resnet_trials_recipe_names_its_width_as_dcgans_do(search):
    assert search.recipe_of({"model": "resnet", "resnet_width": 16, "batch_size": 64}) == {
        "model": "resnet", "width": 16, "batch_size": 64}
    assert search.recipe_of(search.BASELINES[2]) == search.BASELINES[2]
