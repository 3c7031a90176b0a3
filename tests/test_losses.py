"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facegan.losses import LOSSES, bce_d, bce_g


def test_bce_matches_hand_computed_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected_d = -(math.log(sig(2.0)) + math.log(sig(-1.0))) / 2 - (math.log(1 - sig(0.5)) + math.log(1 - sig(-3.0))) / 2
    assert bce_d(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert bce_g(fake).item() == pytest.approx(-(math.log(sig(0.5)) + math.log(sig(-3.0))) / 2, rel=1e-6)


def test_bce_equals_torch_bce_on_logits_and_stays_finite():
    logits = torch.tensor([-200.0, -5.0, 0.0, 5.0, 200.0])
    ones, zeros = torch.ones(5), torch.zeros(5)
    torch.testing.assert_close(bce_d(logits, logits), F.binary_cross_entropy_with_logits(logits, ones) + F.binary_cross_entropy_with_logits(logits, zeros))
    assert torch.isfinite(bce_d(logits, logits)) and torch.isfinite(bce_g(logits))  # where Sigmoid + BCELoss overflows


def test_generator_loss_is_non_saturating():
    # When D confidently rejects fakes, -log D(G(z)) still gives G a strong gradient.
    fake = torch.tensor([-8.0], requires_grad=True)
    bce_g(fake).backward()
    assert fake.grad.abs().item() > 0.99


def test_losses_are_chosen_by_name():
    assert LOSSES["bce"] == (bce_d, bce_g)
