"""Generate images from a trained run: a grid for people, or a folder of PNGs for metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan import viz
from facegan.errors import FaceganError
from facegan.files import reporting_disk_errors
from facegan.generation import generate, latents, load_generator
from facegan.paths import output_dir, output_file
from facegan.precision import resolve_precision
from facegan.runtime import resolve_device


def sample(
    source: str | Path, count: int, out: str | Path, *, seed: int = 0, device: str = "auto",
    batch_size: int = 256, progress: bool = True, precision: str = "auto",
) -> Path:
    """Write `count` generated images: one grid if `out` ends in .png, else one PNG per image in folder `out`."""
    if count <= 0:
        raise FaceganError(f"-n must be a positive number of images, not {count}.")
    out = Path(out)
    if out.suffix.lower() == ".png":
        out = output_file(out, "--out")
        images = sample_array(source, count, seed=seed, device=device, batch_size=batch_size, precision=precision)
        return _save_png(viz.make_grid(images, nrow=min(count, max(1, round(math.sqrt(count))))), out)
    if out.exists() and not out.is_dir():
        raise FaceganError(f"{out} is a file; give a folder for one PNG per image, or a name ending in .png for a grid.")
    out = output_dir(out, "--out")
    torch_device = resolve_device(device)
    generator, config = load_generator(source, torch_device)
    _make_dir(out)
    z = latents(count, config.latent_dim, seed, torch_device)
    fast = resolve_precision(precision, torch_device)
    width = max(6, len(str(count - 1)))
    index = 0
    for chunk in tqdm(z.split(batch_size), desc="sample", unit="batch", disable=not progress):
        for image in generate(generator, chunk, batch_size, fast):
            _save_png(image, out / f"{index:0{width}d}.png")
            index += 1
    return out


def sample_array(source: str | Path, count: int, *, seed: int = 0, device: str = "auto", batch_size: int = 256,
                 precision: str = "auto") -> np.ndarray:
    """`count` generated images as uint8 (N, H, W, 3), for measuring in memory.

    `precision` auto runs G in bf16 where the hardware is fast at it, as training does.
    """
    torch_device = resolve_device(device)
    generator, config = load_generator(source, torch_device)
    fast = resolve_precision(precision, torch_device)
    return generate(generator, latents(count, config.latent_dim, seed, torch_device), batch_size, fast)


@reporting_disk_errors("the images", then="then sample again")
def _save_png(image: np.ndarray, path: Path) -> Path:
    return viz.save_png(image, path)


@reporting_disk_errors("the output folder", then="then sample again")
def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
