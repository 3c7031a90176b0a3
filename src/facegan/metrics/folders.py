"""FID between two folders of images (or prepared datasets), as `facegan fid A B` measures it.

Images keep their own sizes until the network resizes them to 299x299, exactly as it resizes
generated ones, so a folder of saved samples measures what the run measured in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facegan.data import open_prepared
from facegan.data.images import IMAGE_SUFFIXES
from facegan.errors import FaceganError
from facegan.metrics import fid as fid_math
from facegan.metrics.evaluate import as_network, warn_small_fid
from facegan.metrics.inception import Inception, features
from facegan.runtime import resolve_device


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, recursively, sorted; hidden files and macOS litter left out."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(folder).parts))


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise FaceganError(f"{path} could not be read as an image ({error}); remove or replace it.") from None


def _same_size_batches(files: Sequence[Path], batch_size: int) -> Iterator[np.ndarray]:
    """Decoded images in arrays of one size each; each image keeps its size (the network resizes)."""
    pending: dict[tuple[int, ...], list[np.ndarray]] = {}
    held = 0
    for path in files:
        image = _read_rgb(path)
        pending.setdefault(image.shape, []).append(image)
        held += 1
        if held == batch_size:  # flushed by count, so a folder of many sizes never piles up in memory
            yield from (np.stack(bucket) for bucket in pending.values())
            pending, held = {}, 0
    yield from (np.stack(bucket) for bucket in pending.values())


def source_features(source: str | os.PathLike, network: Inception, *, batch_size: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """Features of every image in a folder (recursively) or a prepared dataset."""
    path = Path(source).expanduser()
    if (path / "dataset.json").is_file():
        data = open_prepared(path)
        return features(network, (data.images[i : i + 1024] for i in range(0, len(data), 1024)),
                        batch_size=batch_size, progress=progress, total=len(data))
    if not path.is_dir():
        raise FaceganError(f"{path} is not a folder; give a folder of images or a prepared dataset.")
    files = image_files(path)
    if len(files) < 2:
        raise FaceganError(f"{path} holds {len(files)} image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "FID needs at least 2, and thousands to mean much.")
    batch = batch_size or 64
    return features(network, _same_size_batches(files, batch), batch_size=batch_size, progress=progress, total=len(files))


def fid_folders(a: str | os.PathLike, b: str | os.PathLike, *, network: str | os.PathLike | Inception | None = None,
                device: str = "auto", batch_size: int | None = None, progress: bool = False) -> dict[str, float]:
    """FID between two folders of images (or prepared datasets): {"fid": value, "images_a": n, "images_b": m}."""
    inception = as_network(network, resolve_device(device), progress)
    first = source_features(a, inception, batch_size=batch_size, progress=progress)
    second = source_features(b, inception, batch_size=batch_size, progress=progress)
    warn_small_fid("FID", min(len(first), len(second)))
    value = fid_math.frechet_distance(fid_math.gaussian_stats(first), fid_math.gaussian_stats(second))
    return {"fid": value, "images_a": len(first), "images_b": len(second)}
