"""The built-in dataset: synthetic faces prepared once into the cache, so everything runs offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from facegan.data.prepare import prepare
from facegan.data.prepared import PreparedDataset, open_prepared
from facegan.runtime import cache_dir

SEED = 0  # the built-in dataset is always the same faces; a run's own seed drives its training
log = logging.getLogger(__name__)


def builtin_faces(count: int, resolution: int, folder: str | os.PathLike | None = None, *,
                  progress: bool = False) -> PreparedDataset:
    """`count` synthetic faces at `resolution`, prepared on first use under `folder` (default: the cache)."""
    path = Path(folder if folder is not None else cache_dir()) / f"synthetic-{count}-{resolution}px-seed{SEED}"
    if not (path / "dataset.json").exists():
        if progress:
            log.info(f"preparing {count:,} synthetic faces once, into {path}")
        prepare("synthetic", path, count=count, size=resolution, seed=SEED, progress=progress, force=True)
    return open_prepared(path)


def open_data(data: str | os.PathLike | None, count: int, resolution: int | None, *,
              progress: bool = False) -> PreparedDataset:
    """The prepared dataset at `data`, or (None) the built-in faces: `count` of them at `resolution` (default 64)."""
    if data is not None:
        return open_prepared(data)
    return builtin_faces(count, resolution or 64, progress=progress)
