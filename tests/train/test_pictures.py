"""When an epoch's plots are drawn (train/pictures.py): within their share of the run, and always first and last."""

from __future__ import annotations

import pytest
from conftest import assert_identical, tiny

from facegan.train import pictures
from facegan.train.loop import train
from facegan.train.pictures import PictureBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def draw(budget: PictureBudget, clock: FakeClock, seconds: float) -> None:
    with budget.drawing():
        clock.now += seconds


def test_plots_that_cost_more_than_their_share_are_skipped_until_the_run_has_caught_up():
    clock = FakeClock()
    budget = PictureBudget(share=0.1, clock=clock)
    clock.now += 1.0  # an epoch of training: the first epoch always draws
    assert budget.due(last=False)
    draw(budget, clock, 1.0)  # 1 s of plots in 2 s of run
    clock.now += 1.0  # 1 s in 3 s: over 10%
    assert not budget.due(last=False)
    assert budget.due(last=True)  # the last epoch draws whatever it costs
    clock.now += 6.0  # 1 s in 9 s
    assert not budget.due(last=False)
    clock.now += 1.0  # 1 s in 10 s: within the share again
    assert budget.due(last=False)
    assert (budget.spent, budget.drawn) == (1.0, 1)


def test_cheap_plots_are_drawn_every_epoch():
    clock = FakeClock()
    budget = PictureBudget(share=0.05, clock=clock)
    for _ in range(20):
        clock.now += 60.0  # a CPU epoch
        assert budget.due(last=False)
        draw(budget, clock, 0.8)
    assert budget.drawn == 20 and budget.spent == pytest.approx(16.0)


def test_the_time_spent_counts_even_when_drawing_fails():
    clock = FakeClock()
    budget = PictureBudget(share=0.1, clock=clock)
    with pytest.raises(OSError), budget.drawing():
        clock.now += 2.0
        raise OSError("disk full")
    assert (budget.spent, budget.drawn) == (2.0, 1)


def test_skipped_plots_leave_the_first_and_last_epochs_and_change_no_weight(tmp_path, data32, monkeypatch):
    monkeypatch.setattr(pictures, "SHARE", 0.0)  # any plot costs more than its share: only the first and last are drawn
    few = train(tiny(tmp_path / "few", data32, epochs=4), progress=False)
    monkeypatch.setattr(pictures, "SHARE", 1e9)  # every epoch's
    every = train(tiny(tmp_path / "every", data32, epochs=4), progress=False)
    histograms = lambda run: sorted(p.name for p in (run / "plots").glob("probabilities-epoch-*.png"))
    assert histograms(few) == ["probabilities-epoch-0001.png", "probabilities-epoch-0004.png"]
    assert histograms(every) == [f"probabilities-epoch-000{e}.png" for e in (1, 2, 3, 4)]
    for run in (few, every):  # the grid and checkpoints of every epoch, the other plots as of the last
        assert sorted(p.name for p in (run / "samples").glob("epoch-*.png")) == [f"epoch-000{e}.png" for e in (1, 2, 3, 4)]
        assert (run / "plots" / "losses.png").is_file() and (run / "plots" / "real-vs-fake.png").is_file()
    assert_identical(few, every)


def test_a_run_stopped_by_its_cpu_budget_draws_its_last_epoch(tmp_path, data32, monkeypatch):
    monkeypatch.setattr(pictures, "SHARE", 0.0)
    run = train(tiny(tmp_path, data32, epochs=50, max_cpu_minutes=1e-9), progress=False)  # spent after the first epoch
    assert sorted(p.name for p in (run / "plots").glob("probabilities-epoch-*.png")) == ["probabilities-epoch-0001.png"]
