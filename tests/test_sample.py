"""facegan.sample: a grid or a folder of PNGs from a trained run, the same images for the same seed, G found and refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegan.config import from_preset
from facegan.data.prepare import prepare
from facegan.errors import FaceganError, FaceganWarning
from facegan.generation import latents, load_generator
from facegan.sample import sample, sample_array
from facegan.train.checkpoint import load_checkpoint, save_checkpoint
from facegan.train.loop import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One epoch of the dcgan preset at width 8 on 32 synthetic 32x32 faces: two steps of 16."""
    root = tmp_path_factory.mktemp("sample")
    data = prepare("synthetic", root / "s32", count=32, size=32, progress=False)
    config = from_preset("dcgan", data=str(data), runs_dir=str(root / "runs"), batch_size=16, g_width=8, d_width=8,
                         grid_size=4, epochs=1, device="cpu")
    return train(config, progress=False)


def pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path)) for path in sorted(folder.iterdir())])


def test_latents_are_the_seeds_normal_draws():
    z = latents(5, 100, 7, CPU)
    assert z.shape == (5, 100) and z.dtype == torch.float32 and z.device == CPU
    assert torch.equal(z, torch.randn(5, 100, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(z, latents(5, 100, 7, CPU)) and not torch.equal(z, latents(5, 100, 8, CPU))
    assert z.mean().abs() < 0.2 and (z.std() - 1).abs() < 0.1


def test_load_generator_gives_the_checkpoints_g_in_eval_mode(run):
    generator, config = load_generator(run, CPU)
    assert not generator.training and (config.model, config.resolution, config.g_width, config.latent_dim) == ("dcgan", 32, 8, 100)
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")["generator"]
    assert generator.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[key]) for key, value in generator.state_dict().items())
    with torch.no_grad():
        out = generator(latents(2, 100, 0, CPU))
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    from_file, _ = load_generator(run / "checkpoints" / "epoch-0001.pt", CPU)  # a checkpoint file does as well
    assert all(torch.equal(value, saved[key]) for key, value in from_file.state_dict().items())


def test_load_generator_prefers_the_moving_average_of_g(run, tmp_path):
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    checkpoint["generator_ema"] = {key: value * 0.5 if value.is_floating_point() else value
                                   for key, value in checkpoint["generator"].items()}
    save_checkpoint(checkpoint, tmp_path / "ema.pt")
    generator, _ = load_generator(tmp_path / "ema.pt", CPU)
    assert all(torch.equal(value, checkpoint["generator_ema"][key]) for key, value in generator.state_dict().items())


def test_load_generator_falls_back_past_a_damaged_latest_checkpoint(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    latest = copy / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(FaceganWarning, match=r"latest\.pt is damaged"):
        generator, _ = load_generator(copy, CPU)
    saved = load_checkpoint(run / "checkpoints" / "epoch-0001.pt")["generator"]
    assert all(torch.equal(value, saved[key]) for key, value in generator.state_dict().items())


def test_load_generator_refuses_what_holds_no_usable_g(run, tmp_path):
    with pytest.raises(FaceganError, match=r"missing does not exist; give a run directory \(runs/NNNNN-preset\), a checkpoint"):
        load_generator(tmp_path / "missing", CPU)
    with pytest.raises(FaceganError, match=r"holds no checkpoint; give a run directory that has trained at least one epoch\."):
        load_generator(tmp_path, CPU)
    checkpoint = load_checkpoint(run / "checkpoints" / "latest.pt")
    save_checkpoint({k: v for k, v in checkpoint.items() if k != "generator"}, tmp_path / "no-g.pt")
    with pytest.raises(FaceganError, match=r"no-g\.pt is not a complete facegan checkpoint \(it lacks the generator"):
        load_generator(tmp_path / "no-g.pt", CPU)
    save_checkpoint({**checkpoint, "config": {**checkpoint["config"], "g_width": 16}}, tmp_path / "wider.pt")
    with pytest.raises(FaceganError, match=r"the weights in .*wider\.pt do not fit a dcgan generator of its own configuration"):
        load_generator(tmp_path / "wider.pt", CPU)
    save_checkpoint({**checkpoint, "config": {**checkpoint["config"], "loss": "no-such-loss"}}, tmp_path / "bad-config.pt")
    with pytest.raises(FaceganError, match=r"unknown loss 'no-such-loss'"):  # validated, not built
        load_generator(tmp_path / "bad-config.pt", CPU)


def test_a_grid_holds_the_seeds_images_where_make_grid_puts_them(run, tmp_path):
    path = sample(run, 9, tmp_path / "faces.png", seed=3, device="cpu", progress=False)
    grid = np.asarray(Image.open(path))
    assert path == tmp_path / "faces.png" and grid.shape == (3 * 34 + 2, 3 * 34 + 2, 3)
    images = sample_array(run, 9, seed=3, device="cpu")
    for i, image in enumerate(images):
        r, c = divmod(i, 3)
        assert np.array_equal(grid[2 + r * 34 : 2 + r * 34 + 32, 2 + c * 34 : 2 + c * 34 + 32], image), f"image {i}"
    wide = np.asarray(Image.open(sample(run, 6, tmp_path / "six.PNG", seed=3, device="cpu", progress=False)))
    assert wide.shape == (3 * 34 + 2, 2 * 34 + 2, 3)  # round(sqrt(6)) = 2 columns, so 3 rows


def test_a_folder_holds_one_png_per_image_the_same_in_any_batch_size(run, tmp_path):
    folder = sample(run, 5, tmp_path / "many", seed=3, device="cpu", batch_size=2, progress=False)
    assert [p.name for p in sorted(folder.iterdir())] == [f"{i:06d}.png" for i in range(5)]
    images = pngs(folder)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, sample_array(run, 5, seed=3, device="cpu", batch_size=256))
    again = pngs(sample(run, 5, tmp_path / "again", seed=3, device="cpu", batch_size=5, progress=False))
    assert np.array_equal(images, again)
    other = sample_array(run, 5, seed=4, device="cpu")
    assert not any(np.array_equal(a, b) for a, b in zip(images, other))
    assert len({image.tobytes() for image in images}) == 5  # different latents, different faces


def test_sample_refuses_no_images_and_a_file_for_a_folder(run, tmp_path):
    for count in (0, -3):
        with pytest.raises(FaceganError, match=rf"^-n must be a positive number of images, not {count}\.$"):
            sample(run, count, tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(FaceganError, match=r"taken is a file; give a folder for one PNG per image, or a name ending in \.png"):
        sample(run, 2, tmp_path / "taken", device="cpu", progress=False)
    (tmp_path / "grid.png").mkdir()
    with pytest.raises(FaceganError, match=r"--out .*grid\.png is a directory; give a file name"):
        sample(run, 2, tmp_path / "grid.png", device="cpu", progress=False)
