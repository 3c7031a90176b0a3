"""Generate images from a trained run: a grid for people, or a folder of PNGs for metrics.

A folder is written a batch at a time, latents and images alike, so `-n` is bounded by the disk,
not by memory. A grid is one picture held whole: at most `MAX_GRID_IMAGES` images. A conditional
run takes `attrs` ("Smiling=1,Male=0"); the attributes it leaves unnamed are drawn from the
training labels that match (facegan.conditions).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegan import viz
from facegan.conditions import parse_attrs
from facegan.data.prepared import MANIFEST
from facegan.errors import FaceganError
from facegan.files import reporting_disk_errors
from facegan.generation import SampleFn, load_generator_and_labels, sampler
from facegan.paths import output_dir, output_file
from facegan.precision import resolve_precision
from facegan.runtime import out_of_memory_as_error, resolve_device

# A grid of 32 x 32 faces is already more than an eye can compare (2,114 px a side at 64 px);
# beyond this a grid is no picture but a memory bill. Raise it here if you need larger sheets.
MAX_GRID_IMAGES = 1024


def sample(
    source: str | Path, count: int, out: str | Path, *, seed: int = 0, device: str = "auto",
    batch_size: int = 256, progress: bool = True, precision: str = "auto", attrs: str | None = None,
    truncation: float = 1.0,
) -> Path:
    """Write `count` generated images: one grid if `out` ends in .png, else one PNG per image in folder `out`."""
    if count <= 0:
        raise FaceganError(f"-n must be a positive number of images, not {count}.")
    out = Path(out)
    if out.suffix.lower() == ".png":
        if count > MAX_GRID_IMAGES:
            raise FaceganError(f"a grid holds at most {MAX_GRID_IMAGES:,} images, not {count:,} "
                               f"(facegan.sample.MAX_GRID_IMAGES); give a folder as --out, such as "
                               f"{out.with_suffix('')}, for one PNG per image.")
        out = output_file(out, "--out")
        images = sample_array(source, count, seed=seed, device=device, batch_size=batch_size, precision=precision,
                              attrs=attrs, truncation=truncation)
        return _save_png(viz.make_grid(images, nrow=min(count, max(1, round(math.sqrt(count))))), out)
    if out.exists() and not out.is_dir():
        raise FaceganError(f"{out} is a file; give a folder for one PNG per image, or a name ending in .png for a grid.")
    out = output_dir(out, "--out")
    if (out / MANIFEST).exists():  # its PNGs would sit among the dataset's files, and a --force prepare would delete them
        raise FaceganError(f"--out {out} is a prepared dataset; write the samples into a folder of their own, "
                           f"such as {out.parent / (out.name + '-samples')}.")
    make = run_sampler(source, device, batch_size, precision, attrs, truncation)
    _make_dir(out)
    width = max(6, len(str(count - 1)))
    index = 0
    batches = make(count, seed)
    with _out_of_memory(batch_size):
        for images in tqdm(batches, total=math.ceil(count / batch_size), desc="sample", unit="batch", disable=not progress):
            for image in images:
                _save_png(image, out / f"{index:0{width}d}.png")
                index += 1
    return out


def sample_array(source: str | Path, count: int, *, seed: int = 0, device: str = "auto", batch_size: int = 256,
                 precision: str = "auto", attrs: str | None = None, truncation: float = 1.0) -> np.ndarray:
    """`count` generated images as uint8 (N, H, W, 3), for measuring in memory.

    `precision` auto runs G in bf16 where the hardware is fast at it, as training does.
    """
    make = run_sampler(source, device, batch_size, precision, attrs, truncation)
    with _out_of_memory(batch_size):
        return np.concatenate(list(make(count, seed)))


def run_sampler(source: str | Path, device: str = "auto", batch_size: int = 256, precision: str = "auto",
                attrs: str | None = None, truncation: float = 1.0) -> SampleFn:
    """The sampling function of a run, checkpoint or exported file, with `attrs` held for a conditional one."""
    torch_device = resolve_device(device)
    generator, config, labels = load_generator_and_labels(source, torch_device)
    fixed = parse_attrs(attrs or "", config.condition)
    fast = resolve_precision(precision, torch_device)
    return sampler(generator, config.latent_dim, batch_size=batch_size, precision=fast, labels=labels, fixed=fixed,
                   truncation=truncation)


def _out_of_memory(batch_size: int) -> contextlib.AbstractContextManager[None]:
    return out_of_memory_as_error(f"generating {batch_size} images at once",
                                  f"lower --batch-size (say to {max(1, batch_size // 4)})")


@reporting_disk_errors("the images", then="then sample again")
def _save_png(image: np.ndarray, path: Path) -> Path:
    return viz.save_png(image, path)


@reporting_disk_errors("the output folder", then="then sample again")
def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
