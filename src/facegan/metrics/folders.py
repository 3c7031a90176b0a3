"""FID between two folders of images (or prepared datasets), as `facegan fid A B` measures it.

Images keep their own sizes until the network resizes them to 299x299, exactly as it resizes
generated ones, so a folder of saved samples measures what the run measured in memory. Both sides
are counted before the network loads; files past Pillow's decompression-bomb limit are skipped
and named, as prepare skips them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facegan.data import open_prepared
from facegan.data.images import IMAGE_SUFFIXES
from facegan.errors import FaceganError, FaceganWarning
from facegan.metrics import fid as fid_math
from facegan.metrics.evaluate import as_network, out_of_memory, warn_small_fid
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise FaceganError(f"{path} could not be read as an image ({error}); remove or replace it.") from None


def _too_large(path: Path) -> bool:
    """Whether an image file declares more pixels than Pillow's decompression-bomb limit, read from its header only.

    Pillow refuses more than 2 x Image.MAX_IMAGE_PIXELS (89,478,485; 179 million) and warns above
    the limit itself; both are skipped, as prepare skips them. Unreadable headers are refused.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path):
                return False
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
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


@dataclass(frozen=True)
class ImageSource:
    """A folder's readable image files or a prepared dataset's images: counted and checked before any is decoded."""

    path: Path
    count: int
    batches: Callable[[int], Iterator[np.ndarray]]  # batch size -> uint8 (N, H, W, 3) arrays holding all `count`


def open_source(source: str | os.PathLike) -> ImageSource:
    """A folder of images (searched recursively) or a prepared dataset, with at least 2 images.

    Files with more pixels than Pillow's decompression-bomb limit are skipped, with a warning that
    names them and counts them; a file that is not an image at all is refused.
    """
    path = Path(source).expanduser()
    if (path / "dataset.json").is_file():
        data = open_prepared(path)
        if len(data) < 2:
            raise FaceganError(f"{path} is a prepared dataset of {len(data)} image{'s' if len(data) != 1 else ''}; "
                               "FID needs at least 2, and thousands to mean much.")
        return ImageSource(path, len(data), lambda _: (data.images[i : i + 1024] for i in range(0, len(data), 1024)))
    if not path.is_dir():
        raise FaceganError(f"{path} is not a folder; give a folder of images or a prepared dataset.")
    found = image_files(path)
    too_large = {file for file in found if _too_large(file)}
    skipped = [file for file in found if file in too_large]
    files = [file for file in found if file not in too_large]
    if skipped:
        names = ", ".join(str(p.relative_to(path)) for p in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"{path}: skipped {len(skipped)} of {len(found)} image files with more pixels than Pillow's "
                      f"decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,}; PIL.Image.MAX_IMAGE_PIXELS), as prepare "
                      f"skips them: {names}; FID uses the other {len(files)}.", FaceganWarning, stacklevel=2)
    if len(files) < 2:
        also = f" besides the {len(skipped)} skipped" if skipped else ""
        raise FaceganError(f"{path} holds {len(files)} image files{also} ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "FID needs at least 2, and thousands to mean much.")
    return ImageSource(path, len(files), lambda batch: _same_size_batches(files, batch))


def source_features(source: str | os.PathLike | ImageSource, network: Inception, *, batch_size: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """Features of every image in a folder (recursively) or a prepared dataset."""
    opened = source if isinstance(source, ImageSource) else open_source(source)
    return features(network, opened.batches(batch_size or 64), batch_size=batch_size, progress=progress,
                    total=opened.count)


def fid_folders(a: str | os.PathLike, b: str | os.PathLike, *, network: str | os.PathLike | Inception | None = None,
                device: str = "auto", batch_size: int | None = None, progress: bool = False) -> dict[str, float]:
    """FID between two folders of images (or prepared datasets): {"fid": value, "images_a": n, "images_b": m}.

    Both are opened and counted before the network loads, so a wrong or too small one costs nothing.
    """
    sources = open_source(a), open_source(b)
    inception = as_network(network, resolve_device(device), progress)
    with out_of_memory(batch_size):
        first = source_features(sources[0], inception, batch_size=batch_size, progress=progress)
        second = source_features(sources[1], inception, batch_size=batch_size, progress=progress)
    warn_small_fid("FID", min(len(first), len(second)))
    value = fid_math.frechet_distance(fid_math.gaussian_stats(first), fid_math.gaussian_stats(second))
    return {"fid": value, "images_a": len(first), "images_b": len(second)}
