"""The fast path: mixed precision, device-side batches, and equality with the plain fp32 loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.errors import FaceganError
from facegan.generation import generate
from facegan.precision import Precision, fast_bf16, resolve_precision
from facegan.train.batches import BatchSource, to_model_input
from facegan.train.state import build_state
from facegan.train.step import train_step

CPU = torch.device("cpu")
SMALL = {"batch_size": 32, "g_width": 16, "d_width": 16, "device": "cpu"}


@pytest.mark.parametrize(
    "avx512_bf16, amx, picked",
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "fp32")],
    ids=["avx512-bf16", "amx", "both", "neither"],
)
def test_auto_picks_bf16_exactly_where_the_cpu_runs_it_natively(monkeypatch, avx512_bf16, amx, picked):
    # The CPU's capabilities, as torch reports them (raising=False: a torch without one of them is a CPU without it).
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert fast_bf16(CPU) is (avx512_bf16 or amx)
    auto = resolve_precision("auto", CPU)
    assert auto.name == picked and auto.device_type == "cpu"
    assert auto.dtype is (torch.bfloat16 if picked == "bf16" else None) and not auto.scaler().is_enabled()
    assert resolve_precision("fp32", CPU).dtype is None
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16
    # one scaler in every format: active for float16 only, a pass-through otherwise
    assert resolve_precision("fp16", CPU).scaler().is_enabled()
    assert not resolve_precision("bf16", CPU).scaler().is_enabled() and not resolve_precision("fp32", CPU).scaler().is_enabled()
    with pytest.raises(FaceganError, match="precision must be one of"):
        resolve_precision("fp8", CPU)
    with pytest.raises(FaceganError, match="precision must be auto"):
        from_preset("dcgan", precision="half")


def _step_losses(precision: str, reals: torch.Tensor) -> tuple[dict, object]:
    config = from_preset("dcgan", **SMALL, precision=precision)
    state = build_state(config, 32, CPU)
    return train_step(state, reals, config), state


def _plain_d_loss(reals: torch.Tensor) -> float:
    """The plain path: the same models (same seed) in NCHW float32, BCE on probabilities, as the examples write it."""
    config = from_preset("dcgan", **SMALL, precision="fp32")
    state = build_state(config, 32, CPU)
    G = state.generator.to(memory_format=torch.contiguous_format)
    D = state.discriminator.to(memory_format=torch.contiguous_format)
    z = torch.randn(len(reals), config.latent_dim, generator=torch.Generator().manual_seed(config.seed))
    fake = G(z)
    ones, zeros = torch.ones(len(reals)), torch.zeros(len(reals))
    real_p, fake_p = torch.sigmoid(D(reals.contiguous())), torch.sigmoid(D(fake.detach()))
    loss_d = F.binary_cross_entropy(real_p, ones) + F.binary_cross_entropy(fake_p, zeros)
    return loss_d.item()


def test_bf16_step_computes_the_fp32_losses_within_bf16_tolerance(data32):
    batch, _ = next(BatchSource(open_prepared(data32), CPU).epoch(32, seed=0, epoch=0))
    reals = to_model_input(batch)
    fp32, _ = _step_losses("fp32", reals)
    bf16, state = _step_losses("bf16", reals)
    # bf16 keeps 8 bits of mantissa: relative error ~0.4% per op, ~1-2% through a network.
    for key in ("loss_d", "loss_g"):
        assert bf16[key].item() == pytest.approx(fp32[key].item(), rel=3e-2), key
    torch.testing.assert_close(bf16["real_logits"], fp32["real_logits"], atol=0.05, rtol=0.05)
    # What stays float32 in every precision: weights, BatchNorm statistics, optimizer state, losses.
    assert bf16["loss_d"].dtype == torch.float32 and bf16["real_logits"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in state.generator.parameters())
    assert all(b.dtype == torch.float32 for b in state.generator.buffers() if b.is_floating_point())
    moments = [v for s in state.opt_d.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(m.dtype == torch.float32 for m in moments)


def test_fast_path_computes_the_plain_loops_d_loss(data32):
    """facegan's channels_last, logits-based, foreach-Adam step equals the plain NCHW fp32 computation."""
    reals = to_model_input(next(BatchSource(open_prepared(data32), CPU).epoch(32, seed=0, epoch=0))[0])
    fp32, _ = _step_losses("fp32", reals)
    plain_d = _plain_d_loss(reals)
    assert fp32["loss_d"].item() == pytest.approx(plain_d, rel=1e-5)
    bf16, _ = _step_losses("bf16", reals)
    assert bf16["loss_d"].item() == pytest.approx(plain_d, rel=3e-2)


def test_fp16_trains_through_the_gradient_scaler(data32):
    reals = to_model_input(next(BatchSource(open_prepared(data32), CPU).epoch(32, seed=0, epoch=0))[0])
    out, state = _step_losses("fp16", reals)
    assert state.scaler.is_enabled() and torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    assert "scaler" in state.to_checkpoint(from_preset("dcgan", **SMALL), torch.zeros(1))
    fp32 = build_state(from_preset("dcgan", **SMALL, precision="fp32"), 32, CPU)
    assert not fp32.scaler.is_enabled() and "scaler" not in fp32.to_checkpoint(from_preset("dcgan", **SMALL), torch.zeros(1))


def test_batch_source_gives_the_datasets_batches_and_resumes_mid_epoch(data32):
    dataset = open_prepared(data32)
    source = BatchSource(dataset, CPU)
    expected = list(dataset.batches(16, seed=3, epoch=2, rank=1, world_size=2))
    drawn = [images.numpy() for images, _ in source.epoch(16, seed=3, epoch=2, rank=1, world_size=2)]
    assert len(drawn) == len(expected) == source.steps_per_epoch(16, 2) == 3  # data32's 96 images, 2 ranks, 16 a batch
    assert all(np.array_equal(a, b) for a, b in zip(drawn, expected))
    assert np.array_equal(next(source.epoch(16, seed=3, epoch=2, rank=1, world_size=2, skip=1))[0].numpy(), expected[1])
    # Held resident (as on a GPU), batches are gathered from the tensor and are the same.
    resident = BatchSource(dataset, CPU, resident=True)
    assert all(np.array_equal(a.numpy(), b) for (a, _), b in zip(resident.epoch(16, seed=3, epoch=2, rank=1, world_size=2), expected))


def test_to_model_input_is_channels_last_in_minus_one_to_one():
    batch = torch.tensor([[[[0, 127, 255]]]], dtype=torch.uint8).expand(2, 4, 4, 3)
    x = to_model_input(batch)
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))


def test_generation_in_bf16_differs_from_fp32_by_at_most_a_few_grey_levels():
    config = from_preset("dcgan", **SMALL)
    state = build_state(config, 32, CPU)
    z = torch.randn(16, config.latent_dim, generator=torch.Generator().manual_seed(0))
    exact = generate(state.generator, z).astype(int)
    fast = generate(state.generator, z, precision=Precision("bf16", "cpu")).astype(int)
    assert exact.dtype == fast.dtype and exact.shape == fast.shape == (16, 32, 32, 3)
    difference = np.abs(exact - fast)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8
