"""Walks through a trained generator's latent space, and a movie of a run's training.

- `slerp` / `lerp`: points between two latents. Spherical by default: Gaussian latents of high
  dimension lie near a sphere of radius sqrt(dim), and a straight line between two of them passes
  through the unlikely middle (its points are shorter than any sampled latent), where G makes
  greyer, blurrier faces.
- `interpolate(RUN, seeds, steps, out)`: a grid (one row per consecutive pair of seeds) for a .png;
  for a .gif or .mp4 a movie that walks through every seed and back to the first, so it loops.
- `movie(RUN, out)`: every epoch's fixed-noise grid (samples/epoch-NNNN.png) as one movie, each
  frame labelled with its epoch and step (the step from stats.jsonl; left out where it has none).

Latents for a seed are `generation.latents(1, dim, seed)`, those `facegan sample -n 1 --seed S`
draws; `--truncation` pulls them towards the mean (generation.truncate) before walking.
Movies are written by imageio (its pillow plugin for GIF, imageio-ffmpeg for MP4).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from facegan import plots, viz
from facegan.errors import FaceganError
from facegan.generation import generate, latents, load_generator, truncate
from facegan.paths import output_file
from facegan.runtime import resolve_device

MOVIE_SUFFIXES = (".gif", ".mp4")
GRID_SUFFIXES = (".png",)
MAX_SEEDS = 64  # a walk through more seeds than this is no picture anyone watches to the end
MAX_STEPS = 256
MAX_MOVIE_FRAMES = 2000
_EPOCH_GRID = re.compile(r"epoch-(\d+)\.png")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from a (D,) to b (D,) at fractions t (T,) -> (T, D); linear where a, b are parallel."""
    assert a.shape == b.shape and a.ndim == 1, f"expected two (D,) latents, got {tuple(a.shape)} and {tuple(b.shape)}"
    t = t.reshape(-1, 1).to(a.dtype)
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:  # (nearly) the same direction: sin(omega) ~ 0, and the line is the arc
        return lerp(a, b, t.flatten())
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation from a (D,) to b (D,) at fractions t (T,) -> (T, D)."""
    assert a.shape == b.shape and a.ndim == 1, f"expected two (D,) latents, got {tuple(a.shape)} and {tuple(b.shape)}"
    t = t.reshape(-1, 1).to(a.dtype)
    return (1 - t) * a + t * b


def seed_latent(latent_dim: int, seed: int, truncation: float = 1.0) -> torch.Tensor:
    """The (D,) latent of a seed, as `facegan sample -n 1 --seed SEED` draws it, truncated by psi."""
    return truncate(latents(1, latent_dim, seed), truncation)[0]


def walk(latent_dim: int, seeds: list[int], steps: int, *, spherical: bool = True, truncation: float = 1.0,
         closed: bool = False) -> torch.Tensor:
    """Latents from each seed to the next in `steps` points (both ends included): (pairs, steps, D).

    `closed` adds the pair from the last seed back to the first, for a movie that loops.
    """
    points = [seed_latent(latent_dim, seed, truncation) for seed in seeds]
    pairs = list(zip(points, points[1:] + (points[:1] if closed else [])))
    between = slerp if spherical else lerp
    t = torch.linspace(0.0, 1.0, steps)
    return torch.stack([between(a, b, t) for a, b in pairs])


def parse_seeds(text: str) -> list[int]:
    """'3,17,42' -> [3, 17, 42]; one sentence for anything else."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FaceganError(f"--seeds must be whole numbers separated by commas, such as 3,17,42, not {text!r}.") from None
    if len(seeds) < 2 or len(seeds) > MAX_SEEDS or any(seed < 0 for seed in seeds):
        raise FaceganError(f"--seeds needs 2 to {MAX_SEEDS} seeds of 0 or more, such as 3,17,42, not {text!r}.")
    return seeds


def interpolate(source: str | os.PathLike, seeds: list[int], steps: int, out: str | os.PathLike, *,
                spherical: bool = True, truncation: float = 1.0, device: str = "auto", fps: int = 12) -> Path:
    """A walk between seeds: a grid for a .png (a row per pair), a looping movie for .gif or .mp4."""
    if not 2 <= steps <= MAX_STEPS:
        raise FaceganError(f"--steps must be from 2 to {MAX_STEPS}, not {steps}.")
    if len(seeds) < 2:
        raise FaceganError(f"--seeds needs at least two seeds to walk between, not {len(seeds)}.")
    out = output_file(out, "--out", suffixes=GRID_SUFFIXES + MOVIE_SUFFIXES)
    truncate(torch.zeros(1), truncation)  # a bad psi is one sentence before anything loads
    generator, config = load_generator(source, resolve_device(device))
    device_of = next(generator.parameters()).device
    is_movie = out.suffix.lower() in MOVIE_SUFFIXES
    z = walk(config.latent_dim, seeds, steps, spherical=spherical, truncation=truncation, closed=is_movie)
    pairs = z.shape[0]
    images = generate(generator, z.reshape(-1, config.latent_dim).to(device_of))
    if not is_movie:
        return viz.save_png(viz.make_grid(images, nrow=steps), out)
    # Each pair's last frame is the next pair's first: drop it, so no face is shown twice in a row.
    frames = images.reshape(pairs, steps, *images.shape[1:])[:, :-1].reshape(-1, *images.shape[1:])
    scale = max(1, 256 // images.shape[1])  # 64 px faces are stamps on a screen; nearest-neighbour keeps them sharp
    frames = np.stack([np.kron(frame, np.ones((scale, scale, 1), np.uint8)) for frame in frames])
    return write_movie(frames, out, fps=fps)


def write_movie(frames: np.ndarray, out: Path, *, fps: int) -> Path:
    """uint8 frames (T, H, W, 3) as a looping GIF or an MP4 (H.264 through imageio-ffmpeg)."""
    try:
        import imageio.v3 as iio
    except ImportError:
        raise FaceganError("writing a movie needs imageio; install it with `pip install -e '.[explore]'`.") from None
    if out.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401 - only to say clearly that it is missing
        except ImportError:
            raise FaceganError("writing an .mp4 needs ffmpeg through imageio-ffmpeg; install it with "
                               "`pip install -e '.[explore]'`, or write a .gif instead.") from None
        # H.264 in yuv420p wants even sides; pad with white rather than crop a face.
        height, width = frames.shape[1] + frames.shape[1] % 2, frames.shape[2] + frames.shape[2] % 2
        padded = np.full((len(frames), height, width, 3), 255, np.uint8)
        padded[:, : frames.shape[1], : frames.shape[2]] = frames
        iio.imwrite(out, padded, fps=fps, codec="libx264", macro_block_size=1, plugin="FFMPEG")
    else:
        # duration is per frame in ms; loop=0 loops forever
        iio.imwrite(out, frames, duration=round(1000 / fps), loop=0, plugin="pillow")
    return out


def epoch_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch's fixed-noise grid in run_dir/samples, by epoch."""
    samples = run_dir / "samples"
    found = [(int(m.group(1)), path) for path in samples.glob("epoch-*.png") if (m := _EPOCH_GRID.fullmatch(path.name))]
    return sorted(found)


def steps_by_epoch(run_dir: Path) -> dict[int, int]:
    """The last step logged in each epoch (stats.jsonl's records name the epoch they were trained in, from 1).

    Damaged lines are skipped, never fatal: a label is a courtesy, not a measurement.
    """
    path = run_dir / "stats.jsonl"
    if not path.exists():
        return {}
    records, _ = plots.read_records(path)
    steps: dict[int, int] = {}
    for record in records:
        epoch, step = record.get("epoch"), record.get("step")
        if isinstance(epoch, int) and isinstance(step, int) and not isinstance(step, bool):
            steps[epoch] = max(step, steps.get(epoch, step))
    return steps


def label(image: np.ndarray, text: str) -> np.ndarray:
    """The image with a white strip above it holding `text` (Pillow's built-in font)."""
    strip = 14
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + strip), "white")
    canvas.paste(Image.fromarray(image), (0, strip))
    ImageDraw.Draw(canvas).text((3, 1), text, fill="black")
    return np.asarray(canvas)


def movie(run_dir: str | os.PathLike, out: str | os.PathLike, *, fps: int = 4, size: int | None = None) -> Path:
    """Every epoch's fixed-noise grid of a run as a movie (.gif or .mp4), each frame labelled 'epoch E  step S'.

    `size` is the width of a frame in pixels (grids are shrunk to it, never enlarged): the way to
    keep a GIF small enough for a README.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "samples").is_dir():
        raise FaceganError(f"{run_dir} has no samples/ folder; give a run directory made by `facegan train`.")
    grids = epoch_grids(run_dir)
    if not grids:
        raise FaceganError(f"{run_dir / 'samples'} holds no epoch-NNNN.png grids yet; train at least one epoch first.")
    if len(grids) > MAX_MOVIE_FRAMES:
        grids = grids[:: math.ceil(len(grids) / MAX_MOVIE_FRAMES)]
    out = output_file(out, "--out", suffixes=MOVIE_SUFFIXES)
    steps = steps_by_epoch(run_dir)
    frames = []
    for epoch, path in grids:
        with Image.open(path) as grid:
            grid = grid.convert("RGB")
            if size is not None and grid.width > size:
                grid = grid.resize((size, round(grid.height * size / grid.width)), Image.Resampling.LANCZOS)
            frame = np.asarray(grid)
        text = f"epoch {epoch}" + (f"  step {steps[epoch]:,}" if epoch in steps else "")
        frames.append(label(frame, text))
    shapes = {frame.shape for frame in frames}
    if len(shapes) > 1:
        raise FaceganError(f"the grids in {run_dir / 'samples'} are not all the same size ({sorted(shapes)[:2]}); "
                           "a movie needs frames of one size.")
    return write_movie(np.stack(frames), out, fps=fps)
