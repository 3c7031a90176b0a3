"""Walks between seeds (slerp, lerp, truncation), interpolation grids and movies, and the training movie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny
from PIL import Image

from facegan.errors import FaceganError
from facegan.explore import lerp, movie, parse_seeds, slerp, steps_by_epoch, walk
from facegan.generation import latents, load_generator, sampler, truncate
from facegan.sample import sample_array
from facegan.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data32) -> Path:
    """A two-epoch tiny run at 32x32: two epoch grids for a movie."""
    return train(tiny(tmp_path_factory.mktemp("explore"), data32, epochs=2), progress=False)


def test_slerp_keeps_the_ends_and_the_norm_between_latents_of_one_norm():
    a, b = torch.randn(64, generator=torch.Generator().manual_seed(1)), torch.randn(64, generator=torch.Generator().manual_seed(2))
    b = b / b.norm() * a.norm()
    path = slerp(a, b, torch.linspace(0, 1, 9))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(9), rtol=1e-4)  # on the sphere all the way
    straight = lerp(a, b, torch.linspace(0, 1, 9))
    assert straight[4].norm() < 0.8 * a.norm()  # a straight line cuts through the middle
    assert torch.allclose(slerp(a, a, torch.tensor([0.3]))[0], a, atol=1e-6)  # parallel: no division by sin 0


def test_truncation_one_is_the_very_same_images_and_less_pulls_towards_the_mean(run):
    generator, config = load_generator(run)
    plain = np.concatenate(list(sampler(generator, config.latent_dim)(8, 3)))
    same = np.concatenate(list(sampler(generator, config.latent_dim, truncation=1.0)(8, 3)))
    assert np.array_equal(plain, same)
    z = latents(8, config.latent_dim, 3)
    assert truncate(z, 1.0) is z and torch.equal(truncate(z, 0.5), z * 0.5)
    half = np.concatenate(list(sampler(generator, config.latent_dim, truncation=0.5)(8, 3)))
    assert not np.array_equal(plain, half)
    mean = np.concatenate(list(sampler(generator, config.latent_dim, truncation=0.0)(8, 3)))
    assert (mean == mean[0]).all()  # psi 0: every latent is the mean, one face
    with pytest.raises(FaceganError, match="between 0 and 1"):
        sampler(generator, config.latent_dim, truncation=1.5)
    assert np.array_equal(sample_array(run, 8, seed=3, device="cpu", precision="fp32", truncation=0.5), half)


def test_interpolate_grid_has_a_row_per_pair_that_starts_and_ends_at_the_seeds(tmp_path, capsys, run):
    out = tmp_path / "walk.png"
    result = run_cli(["interpolate", str(run), "--seeds", "3,17,42", "--steps", "4", "--out", str(out), "--device", "cpu"], capsys)
    assert result.code == 0, result.err
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 2 * 34, 2 + 4 * 34, 3)  # 2 rows (3->17, 17->42) of 4 faces of 32 px, 2 px padding
    faces = sample_array(run, 1, seed=3, device="cpu", precision="fp32")[0], sample_array(run, 1, seed=42, device="cpu", precision="fp32")[0]
    assert np.array_equal(grid[2:34, 2:34], faces[0])  # the walk starts at seed 3's face
    assert np.abs(grid[36:68, 104:136].astype(int) - faces[1]).max() <= 1  # and ends at seed 42's (slerp at t=1: rounding)
    lerp_out = tmp_path / "lerp.png"
    assert run_cli(["interpolate", str(run), "--seeds", "3,17", "--steps", "5", "--lerp", "--out", str(lerp_out)], capsys).code == 0
    assert np.asarray(Image.open(lerp_out)).shape == (36, 2 + 5 * 34, 3)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_interpolate_movie_loops_through_every_seed(tmp_path, capsys, run, suffix):
    import imageio.v3 as iio

    out = tmp_path / f"walk{suffix}"
    result = run_cli(["interpolate", str(run), "--seeds", "3,17,42", "--steps", "5", "--out", str(out)], capsys)
    assert result.code == 0, result.err
    frames = iio.imread(out, index=None, plugin="pillow" if suffix == ".gif" else "FFMPEG")
    assert len(frames) == 3 * 4  # three pairs (back to the first), each without its last frame
    assert frames.shape[1:3] == (256, 256)  # 32 px faces enlarged 8x


def test_walk_closed_returns_to_the_first_seed():
    z = walk(16, [1, 2, 3], 4, closed=True)
    assert z.shape == (3, 4, 16)
    assert torch.allclose(z[-1, -1], latents(1, 16, 1)[0], atol=1e-5)


def test_bad_seeds_and_steps_are_one_sentence(tmp_path, capsys, run):
    with pytest.raises(FaceganError, match="commas"):
        parse_seeds("3,x")
    with pytest.raises(FaceganError, match="2 to"):
        parse_seeds("3")
    result = run_cli(["interpolate", str(run), "--steps", "1", "--out", str(tmp_path / "w.png")], capsys)
    assert result.code == 1 and "--steps must be from 2" in result.err
    result = run_cli(["interpolate", str(run), "--out", str(tmp_path / "w.jpg")], capsys)
    assert result.code == 1 and ".png or .gif or .mp4" in result.err
    result = run_cli(["sample", str(run), "-n", "4", "--truncation", "2", "--out", str(tmp_path / "s.png")], capsys)
    assert result.code == 1 and "between 0 and 1" in result.err


def test_movie_has_a_labelled_frame_per_epoch(tmp_path, capsys, run):
    import imageio.v3 as iio

    out = tmp_path / "progress.gif"
    result = run_cli(["movie", str(run), "--out", str(out), "--size", "100"], capsys)
    assert result.code == 0, result.err
    frames = iio.imread(out, index=None, plugin="pillow")
    assert len(frames) == 2 and frames.shape[2] == 100
    assert (frames[:, :14] < 128).any()  # the label strip holds dark text
    steps = steps_by_epoch(run)
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == {e: max(r["step"] for r in records if r.get("epoch") == e) for e in (1, 2)}
    assert steps[2] > steps[1]
    mp4 = movie(run, tmp_path / "progress.mp4")
    assert len(iio.imread(mp4, index=None, plugin="FFMPEG")) == 2


def test_movie_survives_a_damaged_stats_file_and_refuses_a_run_without_grids(tmp_path, run):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "stats.jsonl").write_text("not json\n{\"step\": 3}\n")
    assert movie(copy, tmp_path / "p.gif").exists()
    for grid in (copy / "samples").glob("epoch-*.png"):
        grid.unlink()
    with pytest.raises(FaceganError, match="no epoch-NNNN.png"):
        movie(copy, tmp_path / "q.gif")
    with pytest.raises(FaceganError, match="no samples/"):
        movie(tmp_path / "nothing", tmp_path / "r.gif")
