"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facegan.losses import LOSSES, bce_d, bce_g, gradient_penalty, r1_penalty


def test_bce_matches_hand_computed_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = lambda x: 1 / (1 + math.exp(-x))
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


# Two reals and two fakes, each loss worked out by hand below.
REAL, FAKE = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])


def test_lsgan_matches_hand_computed_values():
    d, g = LOSSES["lsgan"]
    # 0.5 * mean((2-1)^2, (-1-1)^2) + 0.5 * mean(0.5^2, (-3)^2) = 0.5 * 2.5 + 0.5 * 4.625
    assert d(REAL, FAKE).item() == pytest.approx(3.5625)
    # 0.5 * mean((0.5-1)^2, (-3-1)^2) = 0.5 * 8.125
    assert g(FAKE).item() == pytest.approx(4.0625)


def test_wgan_matches_hand_computed_values():
    d, g = LOSSES["wgan"]
    assert d(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)  # mean fake - mean real
    assert g(FAKE).item() == pytest.approx(1.25)


def test_hinge_matches_hand_computed_values():
    d, g = LOSSES["hinge"]
    # reals: relu(1-2)=0, relu(1+1)=2 -> 1; fakes: relu(1+0.5)=1.5, relu(1-3)=0 -> 0.75
    assert d(REAL, FAKE).item() == pytest.approx(1.75)
    assert g(FAKE).item() == pytest.approx(1.25)
    # Confident, correct D: no loss and no gradient (the margin is met).
    real, fake = torch.tensor([3.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    d(real, fake).backward()
    assert d(real, fake).item() == 0 and real.grad.item() == 0 and fake.grad.item() == 0


def test_every_loss_is_a_pair_of_callables():
    assert set(LOSSES) >= {"bce", "lsgan", "wgan", "hinge"}
    for d, g in LOSSES.values():
        assert d(REAL, FAKE).ndim == 0 and g(FAKE).ndim == 0


class LinearCritic(torch.nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so both penalties are known exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.flatten()


def test_gradient_penalty_of_a_linear_critic_is_exact():
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # |w| = 5, shape (1, 1, 2, 2) of one image
    D = LinearCritic(w)
    reals, fakes = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gp = gradient_penalty(D, reals, fakes, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((5 - 1) ** 2)
    gp.backward()  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(D.w.grad, 2 * (5 - 1) * w / 5)


def test_gradient_penalty_interpolates_with_the_given_generator():
    seen = []

    class Spy(LinearCritic):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    D = Spy(torch.ones(1, 1, 2, 2))
    reals, fakes = torch.ones(4, 1, 2, 2), torch.zeros(4, 1, 2, 2)
    gradient_penalty(D, reals, fakes, torch.Generator().manual_seed(1))
    gradient_penalty(D, reals, fakes, torch.Generator().manual_seed(1))
    alpha = seen[0][:, 0, 0, 0]  # reals 1 and fakes 0: x_hat = alpha everywhere in each image
    assert torch.equal(seen[0], seen[1])  # deterministic given the generator
    assert torch.equal(seen[0], alpha[:, None, None, None].expand(4, 1, 2, 2))
    assert ((alpha > 0) & (alpha < 1)).all() and len(alpha.unique()) == 4  # one draw per image


def test_r1_penalty_of_a_linear_critic_is_exact():
    w = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])  # |w|^2 = 5.25
    D = LinearCritic(w)
    reals = torch.randn(3, 1, 2, 2).requires_grad_(True)
    r1 = r1_penalty(D(reals), reals)
    assert r1.item() == pytest.approx(5.25)  # summed over pixels, averaged over images, no 1/2
    r1.backward()  # d/dw |w|^2 = 2 w
    torch.testing.assert_close(D.w.grad, 2 * w)


def test_r1_penalty_needs_reals_that_require_grad():
    reals = torch.randn(2, 1, 2, 2)
    with pytest.raises(AssertionError, match="requires_grad"):
        r1_penalty(LinearCritic(torch.ones(1, 1, 2, 2))(reals), reals)


@pytest.mark.parametrize("model, options", [("dcgan", {"d_norm": "none"}), ("resnet", {}), ("resnet", {"spectral_norm": False})])
def test_penalties_backpropagate_through_the_real_discriminators(model, options):
    from facegan.models import build_models

    torch.manual_seed(0)
    _, D = build_models(model, 8, 4, 4, 16, **options)
    D = D.to(memory_format=torch.channels_last)
    reals = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    fakes = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    gp = gradient_penalty(D, reals, fakes, torch.Generator().manual_seed(0))
    reals.requires_grad_(True)
    r1 = r1_penalty(D(reals), reals)
    (10 * gp + r1).backward()
    assert torch.isfinite(gp) and torch.isfinite(r1)
    # Every weight feels the penalties (biases need not: D is piecewise linear in its input).
    weights = [p for name, p in D.named_parameters() if not name.endswith("bias")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).any() for p in weights)
