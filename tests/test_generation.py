"""generation: latents for a seed, G to uint8 images, sampling functions, and the G to sample from in a run or file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegan.config import from_preset
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.export import export_generator
from facegan.generation import (
    generate,
    latents,
    load_generator,
    read_exported,
    sampler,
    to_uint8,
)
from facegan.train.checkpoint import load_checkpoint
from facegan.train.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch run of the facegan preset (it keeps an EMA of G), width 8, 32 px."""
    root = tmp_path_factory.mktemp("generation")
    data = prepare("synthetic", root / "s32", count=64, size=32, progress=False)
    config = from_preset("facegan", data=str(data), runs_dir=str(root / "runs"), batch_size=16, g_width=8, d_width=8,
                         grid_size=16, device="cpu", epochs=1)
    return train(config, progress=False)


def test_latents_are_the_seeds_on_any_device():
    assert torch.equal(latents(5, 7, 3), torch.randn(5, 7, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(latents(5, 7, 3), latents(5, 7, 4))


def test_to_uint8_rounds_minus_one_to_one_onto_0_to_255():
    images = torch.tensor([-1.0, -2.0, 0.0, 1.0, 0.999]).reshape(1, 1, 5, 1).repeat(1, 3, 1, 1)
    assert to_uint8(images)[0, :, 0, 0].tolist() == [0, 0, 128, 255, 255]  # clamped, rounded (127.5 -> 128)
    assert to_uint8(images).shape == (1, 5, 1, 3)


def test_generate_is_eval_mode_batch_independent_and_restores_the_mode(run):
    generator, config = load_generator(run, "cpu")
    generator.train()
    z = latents(10, config.latent_dim, 0)
    whole, chunked = generate(generator, z), generate(generator, z, batch_size=3)
    assert generator.training  # restored
    # eval mode: BatchNorm's running statistics, so an image does not depend on its batch
    assert whole.dtype == np.uint8 and whole.shape == (10, 32, 32, 3)
    assert np.abs(whole.astype(int) - chunked.astype(int)).max() <= 1
    assert np.abs(generate(generator, z[:1]).astype(int) - whole[:1]).max() <= 1


def test_a_sampler_makes_count_images_of_a_seed_in_bounded_batches(run):
    generator, config = load_generator(run, "cpu")
    sample = sampler(generator, config.latent_dim, batch_size=4)
    batches = list(sample(10, 7))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert np.array_equal(np.concatenate(batches), generate(generator, latents(10, config.latent_dim, 7)))
    assert not np.array_equal(np.concatenate(list(sample(10, 8))), np.concatenate(batches))


def test_the_generator_to_sample_from_is_the_moving_average_unless_raw_is_asked(run):
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    ema, _ = load_generator(run, "cpu")
    raw, _ = load_generator(run, "cpu", which="raw")
    for name, tensor in ema.state_dict().items():
        assert torch.equal(tensor, checkpoint["generator_ema"][name]), name
    for name, tensor in raw.state_dict().items():
        assert torch.equal(tensor, checkpoint["generator"][name]), name
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), raw.state_dict().values()))
    assert not ema.training and next(p for p in ema.parameters() if p.ndim == 4).is_contiguous(memory_format=torch.channels_last)


def test_an_exported_file_samples_what_its_run_does(run, tmp_path):
    out = export_generator(run, tmp_path / "g.safetensors")
    weights, config = read_exported(out)
    assert config.g_width == 8 and config.resolution == 32
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert weights.keys() == checkpoint["generator_ema"].keys()  # the EMA is what an export holds
    from_file, _ = load_generator(out, "cpu")
    from_run, _ = load_generator(run, "cpu")
    z = latents(6, config.latent_dim, 1)
    assert np.array_equal(generate(from_file, z), generate(from_run, z))


def test_what_is_not_a_generator_is_one_sentence(run, tmp_path):
    with pytest.raises(FaceganError, match=r"does not exist; give a run directory \(runs/NNNNN-preset\), a checkpoint file or a \.safetensors file"):
        load_generator(tmp_path / "nothing", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceganError, match=r"holds no checkpoint"):
        load_generator(tmp_path / "empty", "cpu")
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FaceganError, match=r"is damaged or not a safetensors file"):
        load_generator(tmp_path / "x.safetensors", "cpu")
