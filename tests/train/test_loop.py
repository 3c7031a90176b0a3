"""The training loop: one step, the run directory, exact resume, checkpoints, sampling, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_identical, tiny
from PIL import Image

from facegan.config import from_preset
from facegan.data import open_prepared
from facegan.errors import FaceganError
from facegan.sample import sample, sample_array
from facegan.train import checkpoint as checkpoint_module
from facegan.train.batches import to_model_input
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.loop import train
from facegan.train.rundir import resume_config
from facegan.train.state import build_state
from facegan.train.step import train_step


def test_to_model_input_maps_uint8_to_minus_one_one():
    batch = np.array([[[[0, 127, 255]]]], dtype=np.uint8)
    tensor = to_model_input(torch.from_numpy(batch))
    assert tensor.shape == (1, 3, 1, 1) and tensor.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(tensor.flatten(), torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))


def test_one_training_step_updates_both_networks():
    config = from_preset("dcgan", **TINY, resolution=32)
    state = build_state(config, 32, torch.device("cpu"))
    before_g = [p.clone() for p in state.generator.parameters()]
    before_d = [p.clone() for p in state.discriminator.parameters()]
    reals = torch.rand(16, 3, 32, 32) * 2 - 1
    out = train_step(state, reals, config)
    assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    # At initialisation D is unsure: both losses are near log(4) and log(2).
    assert out["loss_d"].item() == pytest.approx(np.log(4), abs=0.3)
    assert out["loss_g"].item() == pytest.approx(np.log(2), abs=0.3)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, state.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, state.discriminator.parameters()))
    assert state.step == 1


def test_a_run_directory_holds_everything(tmp_path, data32):
    run = train(tiny(tmp_path, data32, epochs=2, log_every=2, grid_size=16), progress=False)
    assert run.name == "00001-dcgan"
    for name in ["config.json", "stats.jsonl", "fixed_noise.pt", "samples/reals.png", "samples/epoch-0001.png",
                 "samples/epoch-0002.png", "plots/losses.png", "plots/probabilities-epoch-0001.png",
                 "plots/probabilities-epoch-0002.png", "plots/real-vs-fake.png", "checkpoints/latest.pt",
                 "checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"]:
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["resolution"] == 32 and config["lr_g"] == 2e-4 and config["betas"] == [0.5, 0.999]
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "lr_g", "lr_d", "images_per_s", "kimg", "epoch"} <= records[0].keys()
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in records)
    grid = np.asarray(Image.open(run / "samples" / "epoch-0002.png"))
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3)  # 16 images of 32px in a 4x4 grid, 2px padding
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert (checkpoint["epoch"], checkpoint["step"], checkpoint["batch_in_epoch"]) == (2, 12, 0)
    assert set(checkpoint) >= {"generator", "discriminator", "opt_g", "opt_d", "noise_rng", "config", "fixed_noise", "version"}
    assert train(tiny(tmp_path, data32, epochs=1), progress=False).name == "00002-dcgan"


def test_resume_from_an_epoch_boundary_is_bit_identical(tmp_path, data32):
    straight = train(tiny(tmp_path / "a", data32, epochs=3), progress=False)
    interrupted = train(tiny(tmp_path / "b", data32, epochs=1), progress=False)
    resumed = train(resume_config(interrupted, {"epochs": 3}), resume=interrupted, progress=False)
    assert resumed == interrupted
    assert_identical(straight, resumed)
    a = (straight / "stats.jsonl").read_text().splitlines()
    b = (resumed / "stats.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in ("images_per_s", "cpu_s")} for x in lines]
    assert strip(a) == strip(b)


def test_resume_mid_epoch_after_a_crash_is_bit_identical(tmp_path, data32):
    straight = train(tiny(tmp_path / "a", data32, epochs=2), progress=False)
    # A crash at step 9 (mid epoch 2), with latest.pt last refreshed at step 8.
    crashed = train(tiny(tmp_path / "b", data32, epochs=2, checkpoint_every_steps=4), progress=False, abort_fn=lambda state: state.step >= 9)
    assert load_checkpoint(crashed / "checkpoints" / "latest.pt")["step"] == 8
    resumed = train(resume_config(crashed, {}), resume=crashed, progress=False)
    assert_identical(straight, resumed)
    steps = [json.loads(x)["step"] for x in (resumed / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # what was logged after the checkpoint was not kept twice


def test_resume_refuses_a_different_model(tmp_path, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    with pytest.raises(FaceganError, match="cannot resume .* with a different latent_dim"):
        train(resume_config(run, {"latent_dim": 128}), resume=run, progress=False)


def test_resume_refuses_another_checkpoint_format(tmp_path, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    state["version"] = 99
    save_checkpoint(state, run / "checkpoints" / "latest.pt")  # as another facegan version would, with its hash
    with pytest.raises(FaceganError, match="checkpoint of format 99"):
        train(resume_config(run, {"epochs": 2}), resume=run, progress=False)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "facegan-checkpoint", "version": 1, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(FaceganError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def full_disk(obj, stream):
        stream.write(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(FaceganError, match="could not write the checkpoint .* the previous checkpoint is intact"):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt", "latest.pt.sha256"]


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(FaceganError, match="is damaged or not a checkpoint"):
        load_checkpoint(path)


def test_sample_grid_and_folder_are_deterministic(tmp_path, data32):
    run = train(tiny(tmp_path, data32, epochs=1), progress=False)
    grid = sample(run, 9, tmp_path / "faces.png", seed=7, progress=False)
    assert np.asarray(Image.open(grid)).shape == (3 * 34 + 2, 3 * 34 + 2, 3)
    folder = sample(run, 20, tmp_path / "many", seed=7, batch_size=8, progress=False)
    files = sorted(folder.iterdir())
    assert [f.name for f in files][:2] == ["000000.png", "000001.png"] and len(files) == 20
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    # The same seed gives the same images in any batch size, and PNGs hold exactly the uint8 values.
    assert np.array_equal(images, sample_array(run, 20, seed=7))
    assert not np.array_equal(images[:9], sample_array(run, 9, seed=8))


def test_bad_data_and_sizes(tmp_path, data32):
    with pytest.raises(FaceganError, match="not a prepared dataset .*facegan prepare"):
        train(tiny(tmp_path, tmp_path / "photos"), progress=False)
    with pytest.raises(FaceganError, match="fewer than one batch"):
        train(tiny(tmp_path, data32, batch_size=128), progress=False)
    with pytest.raises(FaceganError, match="the data is 32x32 but the run is configured for 64x64"):
        train(tiny(tmp_path, data32, resolution=64), progress=False)
    with pytest.raises(FaceganError, match="not a facegan run directory"):
        resume_config(tmp_path, {})


def test_only_rank_zero_writes_and_each_rank_draws_its_share(tmp_path, data32, monkeypatch):
    from facegan.train import loop

    drawn = []
    original = loop.to_model_input
    monkeypatch.setattr(loop, "to_model_input", lambda batch: drawn.append(batch.numpy().copy()) or original(batch))
    result = train(tiny(tmp_path, data32, epochs=1), progress=False, rank=1, world_size=2)
    assert result is None and not (tmp_path / "runs").exists()
    assert len(drawn) == 6  # 96 images / 2 ranks / shares of 8 of the global batch of 16: as many steps as one process
    dataset = open_prepared(data32)
    expected = list(dataset.batches(8, seed=0, epoch=0, rank=1, world_size=2))
    assert all(np.array_equal(a, b) for a, b in zip(drawn, expected))


def test_a_restarted_torchrun_job_finds_the_newest_run_it_started(tmp_path):
    from facegan.train.rundir import JOB, job_run_dir

    assert job_run_dir(tmp_path / "none-yet", "J") is None
    for name, job in (("00001-dcgan", "J"), ("00002-dcgan", "J"), ("00003-dcgan", "K"), ("00004-dcgan", None)):
        (tmp_path / name).mkdir()
        if job is not None:
            (tmp_path / name / JOB).write_text(f"{job}\n")
    assert job_run_dir(tmp_path, "J") == tmp_path / "00002-dcgan"  # not another job's, nor one torchrun did not start
    assert job_run_dir(tmp_path, "L") is None


class _FailingBackward(torch.autograd.Function):
    """What a miscompiled kernel does: the forward pass runs, the backward pass raises (as torch 2.11's inductor did)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("expected size 512==512, stride 16==1 at dim=1\nError in op: convolution_backward")


class _MiscompiledG(torch.nn.Module):
    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z, labels=None):
        return _FailingBackward.apply(self.generator(z, labels))


def test_a_compile_that_fails_at_the_first_step_trains_on_exactly_as_without_it(tmp_path, data32, monkeypatch):
    # It fails in G's update, after D's has stepped: that D step is undone too, so the run is the eager run, bit for bit.
    from facegan.errors import FaceganWarning
    from facegan.train import state as state_module

    monkeypatch.setattr(state_module, "compile_models",
                        lambda g, d, mode, device: (_MiscompiledG(g), d) if mode == "on" else None)
    with pytest.warns(FaceganWarning, match=r"torch.compile failed .* at the first step \(AssertionError: expected size "
                                            r"512==512, stride 16==1 at dim=1\), so the run trains without it"):
        compiled = train(tiny(tmp_path / "compiled", data32, epochs=2, compile="on"), progress=False)
    eager = train(tiny(tmp_path / "eager", data32, epochs=2), progress=False)
    assert_identical(compiled, eager)
