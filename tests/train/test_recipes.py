"""The presets beyond DCGAN, through the same commands: train, sample, resume, and the blocks they use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    FID_REL,
    TINY,
    TINY_ARGS,
    assert_identical,
    features_of,
    fid_of,
    run_cli,
    tiny,
)
from PIL import Image

from facegan import viz
from facegan.config import PRESETS, from_preset
from facegan.data import open_prepared
from facegan.errors import FaceganError
from facegan.generation import generate, load_generator
from facegan.metrics.evaluate import real_features
from facegan.metrics.fid import precision_recall
from facegan.sample import sample_array
from facegan.train.checkpoint import load_checkpoint
from facegan.train.loop import train
from facegan.train.rundir import resume_config
from facegan.train.state import build_state
from facegan.train.step import train_step


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_samples_resumes_and_evaluates(tmp_path, data32, capsys, network, inception_calls, preset):
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
    # ... and evaluates through `facegan evaluate`, measuring the generator it samples from: the
    # network saw the 20 images `facegan sample` draws for seed 0, and the values are those of
    # their features and the cached ones of 20 real images.
    code, _, err = run_cli(["evaluate", str(run), "--metrics", "fid20,pr20", "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 12 // config.d_steps
    fake = features_of(inception_calls, sample_array(run, 20, seed=0, device="cpu", precision="fp32"))
    real = real_features(open_prepared(data32), 20, network)
    assert record["fid20"] == pytest.approx(fid_of(real, fake), rel=FID_REL)
    assert (record["pr20_precision"], record["pr20_recall"]) == pytest.approx(precision_recall(real, fake))


def test_the_facegan_preset_resumes_mid_epoch_bit_identically(tmp_path, data32):
    """EMA, flips, spectral norm and the learning-rate schedule all survive a crash exactly."""
    straight = train(tiny(tmp_path / "a", data32, "facegan", epochs=2), progress=False)
    crashed = train(tiny(tmp_path / "b", data32, "facegan", epochs=2, checkpoint_every_steps=4), progress=False,
                    abort_fn=lambda state: state.step >= 9)
    resumed = train(resume_config(crashed, {}), resume=crashed, progress=False)
    assert "generator_ema" in load_checkpoint(resumed / "checkpoints" / "latest.pt")
    assert_identical(straight, resumed)


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
    # The epoch's grid is the moving average's images of the run's fixed noise, pixel for pixel,
    # and not the trained G's.
    noise = torch.load(run / "fixed_noise.pt", weights_only=True)
    grid = np.asarray(Image.open(run / "samples" / "epoch-0001.png").convert("RGB"))
    rendered = viz.make_grid(generate(generator, noise))
    assert grid.shape == rendered.shape
    assert np.array_equal(grid, rendered), f"{np.any(grid != rendered, axis=-1).sum()} of {grid.size // 3} pixels differ"
    generator.load_state_dict(checkpoint["generator"])
    assert not np.array_equal(grid, viz.make_grid(generate(generator, noise)))


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
    def trained(name: str, **augment) -> dict:
        """G after three steps (a step checkpoint): enough to see what augmentation changes."""
        config = tiny(tmp_path / name, data32, "dcgan", epochs=1, checkpoint_every_steps=3, **augment)
        return load_checkpoint(train(config, progress=False, abort_fn=lambda state: state.step >= 3) / "checkpoints" / "latest.pt")["generator"]

    a, b = trained("a", augment="color,translation,cutout"), trained("b", augment="color,translation,cutout")
    assert all(torch.equal(a[name], b[name]) for name in a)
    plain = trained("plain")
    assert not any(torch.equal(a[name], plain[name]) for name in a if a[name].is_floating_point())


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
    code, _, err = run_cli(["train", "--preset", "lsgan", "--data", str(data32), "--runs-dir", str(tmp_path / "runs"),
                            "--epochs", "1", *TINY_ARGS], capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["loss"] == "lsgan" and run.name.endswith("-lsgan")
