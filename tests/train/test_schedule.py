"""Learning-rate schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from facegan.train.schedule import lr_factor, set_lr


def test_constant_is_one_throughout():
    assert [lr_factor(s, 100, "constant") for s in (0, 50, 100, 150)] == [1.0] * 4


def test_linear_decays_to_zero_at_the_end():
    assert [lr_factor(s, 100, "linear") for s in (0, 25, 50, 100, 120)] == [1.0, 0.75, 0.5, 0.0, 0.0]


def test_linear_from_a_start_fraction():
    # Constant for the first 60 of 100 steps, then 40 steps down to 0.
    values = [lr_factor(s, 100, "linear", start_fraction=0.6) for s in (0, 60, 70, 90, 100)]
    assert values == pytest.approx([1.0, 1.0, 0.75, 0.25, 0.0])


def test_cosine_goes_from_one_to_zero():
    assert lr_factor(0, 100, "cosine") == 1.0
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(25, 100, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0)
    assert lr_factor(75, 100, "cosine", start_fraction=0.5) == pytest.approx(0.5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 100, "step")
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(0, 0, "linear")
    with pytest.raises(ValueError, match="start_fraction"):
        lr_factor(0, 100, "linear", start_fraction=1.0)


def test_set_lr_scales_each_group_from_its_base_rate():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [a], "lr": 2e-4}, {"params": [b], "lr": 1e-4}])
    set_lr(optimizer, [2e-4, 1e-4], 0.5)
    set_lr(optimizer, [2e-4, 1e-4], 0.5)  # from the base rates: applying twice does not compound
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 5e-5])
