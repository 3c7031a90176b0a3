"""The presets beyond DCGAN, through the same commands: train, sample, resume, and the blocks they use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facegan.cli import main
from facegan.config import PRESETS, from_preset
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.sample import load_generator, sample_array
from facegan.train.checkpoint import load_checkpoint
from facegan.train.loop import build_state, resume_config, train, train_step

TINY = {"batch_size": 16, "g_width": 8, "d_width": 8, "log_every": 1, "grid_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def data32(tmp_path_factory) -> Path:
    """96 synthetic faces at 32x32: six batches of 16 per epoch."""
    return prepare("synthetic", tmp_path_factory.mktemp("data") / "s32", count=96, size=32, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Reference features go to a temporary cache shared by this module's runs, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGAN_CACHE", str(path))
        yield path


def tiny(tmp_path: Path, data: Path, preset: str, **overrides):
    return from_preset(preset, data=str(data), runs_dir=str(tmp_path / "runs"), **{**TINY, **overrides})


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_samples_resumes_and_evaluates(tmp_path, data32, cache, preset):
    run = train(tiny(tmp_path, data32, preset, epochs=1), progress=False)
    config = from_preset(preset)
    stats = [r for r in records(run) if "step" in r]
    # d_steps D updates per G update: 6 batches give 6 // d_steps G updates.
    assert stats[-1]["step"] == 6 // config.d_steps
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in stats)
    if config.gp_weight:
        assert all(r["gp"] >= 0 for r in stats)
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ("generator_ema" in checkpoint) == (config.ema_kimg > 0)
    assert checkpoint["d_updates"] == 6
    images = sample_array(run, 4, seed=1, device="cpu")
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    resumed = train(resume_config(run, {"epochs": 2}), resume=run, progress=False)
    assert load_checkpoint(resumed / "checkpoints" / "latest.pt")["d_updates"] == 12
    assert (run / "samples" / "epoch-0002.png").exists()
    # ... and evaluates through `facegan evaluate`, measuring the generator it samples from.
    assert main(["evaluate", str(run), "--metrics", "fid20,pr20", "--device", "cpu", "--quiet"]) == 0
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 12 // config.d_steps and record["fid20"] > 0 and 0 <= record["pr20_recall"] <= 1


def test_the_facegan_preset_resumes_mid_epoch_bit_identically(tmp_path, data32):
    """EMA, flips, spectral norm and the learning-rate schedule all survive a crash exactly."""
    straight = train(tiny(tmp_path / "a", data32, "facegan", epochs=2), progress=False)
    crashed = train(tiny(tmp_path / "b", data32, "facegan", epochs=2, checkpoint_every_steps=4), progress=False,
                    stop_after_steps=9)
    resumed = train(resume_config(crashed, {}), resume=crashed, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "latest.pt") for r in (straight, resumed))
    for key in ("generator", "discriminator", "generator_ema"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key
    assert a["noise_rng"].equal(b["noise_rng"]) and a["step"] == b["step"] == 12


def test_linear_decay_reaches_zero_at_the_end_of_the_run(tmp_path, data32):
    run = train(tiny(tmp_path, data32, "dcgan", epochs=2, lr_schedule="linear", lr_decay_start=0.5), progress=False)
    rates = {r["step"]: r["lr_g"] for r in records(run)}
    # 12 G updates; record k shows the rate used by update k (step k - 1 done before it).
    assert rates[1] == rates[6] == pytest.approx(2e-4)
    assert rates[7] == pytest.approx(2e-4 * (1 - 0 / 6))
    assert rates[10] == pytest.approx(2e-4 * (1 - 3 / 6))
    assert rates[12] == pytest.approx(2e-4 * (1 - 5 / 6))


def test_samples_and_grids_come_from_the_moving_average(tmp_path, data32):
    run = train(tiny(tmp_path, data32, "dcgan", epochs=1, ema_kimg=0.05), progress=False)
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    generator, _ = load_generator(run, torch.device("cpu"))
    ema = checkpoint["generator_ema"]
    assert all(torch.equal(generator.state_dict()[name], ema[name]) for name in ema)
    assert not all(torch.equal(checkpoint["generator"][name], ema[name]) for name in ema)


def test_d_steps_update_d_on_every_batch_and_g_on_every_kth(data32):
    config = from_preset("wgan-gp", **TINY)
    state = build_state(config, 32, torch.device("cpu"))
    reals = torch.rand(16, 3, 32, 32) * 2 - 1
    g_before = [p.clone() for p in state.generator.parameters()]
    out = train_step(state, reals, config, update_g=False)
    assert "loss_g" not in out and out["gp"] >= 0 and state.d_updates == 1 and state.step == 0
    assert all(torch.equal(a, b) for a, b in zip(g_before, state.generator.parameters()))
    out = train_step(state, reals, config, update_g=True)
    assert "loss_g" in out and state.d_updates == 2 and state.step == 1
    assert not all(torch.equal(a, b) for a, b in zip(g_before, state.generator.parameters()))


def test_lazy_r1_is_added_every_r1_every_d_updates():
    config = from_preset("dcgan", **TINY, r1_gamma=1.0, r1_every=2, d_norm="none")
    state = build_state(config, 32, torch.device("cpu"))
    reals = torch.rand(16, 3, 32, 32) * 2 - 1
    seen = ["r1" in train_step(state, reals, config) for _ in range(4)]
    assert seen == [True, False, True, False]


def test_diffaugment_trains_and_is_deterministic(tmp_path, data32):
    config = tiny(tmp_path, data32, "dcgan", augment="color,translation,cutout", epochs=1)
    first = train(config, progress=False)
    second = train(tiny(tmp_path, data32, "dcgan", augment="color,translation,cutout", epochs=1), progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "latest.pt")["generator"] for r in (first, second))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_nonsense_recipe_settings_are_refused():
    for bad, message in (({"gp_weight": 10.0}, "needs a D without BatchNorm"),
                         ({"d_steps": 0}, "d-steps must be a whole number of at least 1"),
                         ({"augment": "rotate"}, "unknown augmentation 'rotate'"),
                         ({"lr_schedule": "step"}, "lr-schedule must be constant, linear or cosine"),
                         ({"lr_decay_start": 1.0}, "lr-decay-start must be a fraction"),
                         ({"model": "resnet", "d_norm": "batch"}, "has no normalisation layers"),
                         ({"ema_kimg": -1.0}, "ema-kimg must be 0")):
        with pytest.raises(FaceganError, match=message):
            from_preset("dcgan", **bad)


def test_the_cli_trains_a_preset(tmp_path, data32, capsys):
    code = main(["train", "--preset", "lsgan", "--data", str(data32), "--runs-dir", str(tmp_path / "runs"), "--epochs", "1",
                 "--batch-size", "16", "--g-width", "8", "--d-width", "8", "--device", "cpu", "--quiet"])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["loss"] == "lsgan" and run.name.endswith("-lsgan")
