"""The EMA of G: the exact update rule, copied buffers, the half-life formula, a frozen copy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facegan.models import build_models
from facegan.train.ema import EMA, beta_for


def small_g() -> nn.Module:
    torch.manual_seed(0)
    return build_models("dcgan", 8, 4, 4, 32)[0]


def test_one_update_is_beta_old_plus_one_minus_beta_new():
    model = small_g()
    ema = EMA(model)
    old = {k: v.clone() for k, v in ema.module.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema.update(model, 0.9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(dict(ema.module.named_parameters())[name], 0.9 * old[name] + 0.1 * p)


def test_update_is_exact_on_representable_numbers():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(4.0)
    ema = EMA(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 2.0]]))
        model.bias.fill_(0.0)
    ema.update(model, 0.75)
    assert torch.equal(ema.module.weight, torch.tensor([[1.5, -1.0]]))  # 0.75 old + 0.25 new
    assert torch.equal(ema.module.bias, torch.tensor([3.0]))
    ema.update(model, 0.0)
    assert torch.equal(ema.module.weight, model.weight)  # beta 0: the model itself


def test_buffers_are_copied_not_averaged():
    model = small_g()
    ema = EMA(model)
    model(torch.randn(16, 8))  # train mode: BatchNorm's running statistics move
    ema.update(model, 0.999)
    for average, buffer in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(average, buffer)


def test_the_copy_is_frozen_and_untouched_by_the_optimizer():
    model = small_g()
    ema = EMA(model)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    before = [p.clone() for p in ema.module.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).mean().backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, ema.module.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_state_dict_round_trip():
    model = small_g()
    ema = EMA(model)
    with torch.no_grad():
        next(ema.module.parameters()).add_(1.0)
    restored = EMA(model)
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), ema.state_dict().values()))


def test_update_refuses_another_model():
    ema = EMA(nn.Linear(2, 1))
    with pytest.raises(AssertionError, match="not those"):
        ema.update(nn.Sequential(nn.Linear(2, 1)), 0.5)


def test_beta_from_half_life():
    assert beta_for(10_000, 128) == pytest.approx(0.5 ** 0.0128)  # StyleGAN2's ema_kimg = 10
    assert beta_for(1000, 1000) == pytest.approx(0.5)  # one half-life per step
    assert beta_for(1000, 100) ** 10 == pytest.approx(0.5)  # ten steps halve the old weights' share
    # Ramp-up: the half-life grows with the images seen, up to its cap.
    assert beta_for(10_000, 100, images_seen=0, rampup=0.05) == 0.0
    assert beta_for(10_000, 100, images_seen=2_000, rampup=0.05) == pytest.approx(0.5)  # half-life 100
    assert beta_for(10_000, 100, images_seen=10**7, rampup=0.05) == pytest.approx(beta_for(10_000, 100))
    with pytest.raises(ValueError, match="images_seen"):
        beta_for(10_000, 100, rampup=0.05)
