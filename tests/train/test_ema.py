"""The EMA of G: the exact update rule, copied buffers, the half-life formula, a frozen copy, and
standing statistics (BatchNorm's statistics recomputed from the average's own activations)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import tiny
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from facegan.conditions import LabelTable
from facegan.export import export_generator
from facegan.generation import load_generator, load_label_table, read_exported
from facegan.models import build_models
from facegan.train.checkpoint import load_checkpoint
from facegan.train.ema import EMA, beta_for, standing_statistics


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


def statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


def trained_ema(family: str = "dcgan", num_attributes: int = 0) -> EMA:
    """An EMA of a G whose running statistics have moved (a few train-mode batches) and whose weights differ from G's."""
    torch.manual_seed(0)
    model = build_models(family, 8, 4, 4, 32, num_attributes=num_attributes)[0]
    ema = EMA(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
        c = torch.ones(16, num_attributes) if num_attributes else None
        for _ in range(3):
            model(torch.randn(16, 8), c)
    ema.update(model, 0.5)
    return ema


@pytest.mark.parametrize("family", ["dcgan", "resnet"])
def test_standing_statistics_are_deterministic_and_leave_weights_momenta_and_mode_alone(family):
    ema = trained_ema(family)
    copied = statistics(ema.module)
    weights = [p.clone() for p in ema.module.parameters()]
    momenta = [m.momentum for m in ema.module.modules() if isinstance(m, _BatchNorm)]
    twin = copy.deepcopy(ema.module)
    assert standing_statistics(ema.module, 8, batches=3, batch_size=8) == len(momenta) > 0
    standing_statistics(twin, 8, batches=3, batch_size=8)
    standing = statistics(ema.module)
    assert all(torch.equal(standing[name], value) for name, value in statistics(twin).items())  # a seed's own
    means = [name for name in standing if name.endswith("running_mean")]
    assert all(not torch.equal(standing[name], copied[name]) for name in means)  # not G's copied ones
    assert all(int(standing[name]) == 3 for name in standing if name.endswith("num_batches_tracked"))
    assert all(torch.equal(a, b) for a, b in zip(weights, ema.module.parameters()))
    assert [m.momentum for m in ema.module.modules() if isinstance(m, _BatchNorm)] == momenta
    assert ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    # Another seed, other latents: other statistics.
    standing_statistics(twin, 8, seed=1, batches=3, batch_size=8)
    assert not torch.equal(statistics(twin)[means[0]], standing[means[0]])


def test_standing_statistics_are_the_plain_average_of_the_batches_statistics():
    ema = trained_ema()
    ema.module.eval()
    seen: dict[nn.Module, list[torch.Tensor]] = {}
    norms = [m for m in ema.module.modules() if isinstance(m, _BatchNorm)]
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.setdefault(m, []).append(args[0].clone())) for m in norms]
    standing_statistics(ema.module, 8, batches=4, batch_size=8)
    for hook in hooks:
        hook.remove()
    assert not ema.module.training  # eval mode restored
    for norm in norms:
        inputs = seen[norm]
        assert len(inputs) == 4
        mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
        var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in inputs]).mean(0)
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm.running_var, var, rtol=1e-5, atol=1e-6)


def test_a_conditional_generator_draws_its_labels_and_a_generator_without_batchnorm_is_left_alone():
    ema = trained_ema(num_attributes=2)
    table = LabelTable.from_rows(("Smiling", "Male"), np.array([[1, 0], [0, 1], [1, 1]] * 3))
    with pytest.raises(ValueError, match="training labels"):
        standing_statistics(ema.module, 8)
    twin = copy.deepcopy(ema.module)
    standing_statistics(ema.module, 8, labels=table, batches=2, batch_size=8)
    standing_statistics(twin, 8, labels=table, batches=2, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(statistics(ema.module).values(), statistics(twin).values()))
    plain = nn.Linear(8, 3)
    before = statistics(plain) | {"weight": plain.weight.clone()}
    assert standing_statistics(plain, 8) == 0
    assert torch.equal(plain.weight, before["weight"])


def test_a_runs_checkpoint_and_export_carry_the_moving_averages_standing_statistics(tmp_path, data32, one_thread):
    """What sample, export, evaluate, serve and audit read: the checkpoint's moving average, with statistics
    of its own (a conditional run, so its labels are drawn from the run's table), and the raw G's as trained."""
    from facegan.train.loop import train

    run = train(tiny(tmp_path, data32, condition=("Smiling", "Male"), epochs=1, ema_kimg=0.05), progress=False)
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    ema, raw = checkpoint["generator_ema"], checkpoint["generator"]
    generator, config = load_generator(run)
    expected = copy.deepcopy(generator).train()
    standing_statistics(expected, config.latent_dim, labels=load_label_table(run))
    means = [name for name in ema if name.endswith("running_mean")]
    assert means
    for name, value in expected.named_buffers():
        torch.testing.assert_close(ema[name], value, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(ema[name], raw[name]) for name in means)  # not the copies of G's
    assert all(int(ema[name]) == 16 for name in ema if name.endswith("num_batches_tracked"))
    tensors, _ = read_exported(export_generator(run, tmp_path / "g.safetensors"))
    assert all(torch.equal(tensors[name], ema[name]) for name in means)


def test_standing_statistics_are_computed_once_per_update(monkeypatch):
    """An epoch end that also saves a step checkpoint, or a stop there, refreshes once; an update or a load makes them stale."""
    from facegan.config import from_preset
    from facegan.train import state as state_module

    config = from_preset("dcgan", latent_dim=8, g_width=4, d_width=4, ema_kimg=1.0, device="cpu")
    train_state = state_module.build_state(config, 32, torch.device("cpu"))
    calls = []
    monkeypatch.setattr(state_module, "standing_statistics", lambda module, *a, **k: calls.append(module))
    train_state.refresh_ema_statistics(config)
    train_state.refresh_ema_statistics(config)
    assert calls == [train_state.ema.module]
    train_state.ema.update(train_state.generator, 0.5)
    train_state.refresh_ema_statistics(config)
    train_state.ema.load_state_dict(train_state.ema.state_dict())
    train_state.refresh_ema_statistics(config)
    train_state.refresh_ema_statistics(config)
    assert len(calls) == 3
