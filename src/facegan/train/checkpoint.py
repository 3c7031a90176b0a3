"""Checkpoints: everything needed to continue a run exactly, written atomically, read safely."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from facegan.errors import FaceganError

FORMAT = "facegan-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest.pt"
_EPOCH_FILE = re.compile(r"epoch-(\d{4,})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / "checkpoints"


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint taken after `epoch` epochs."""
    return f"epoch-{epoch:04d}.pt"


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` atomically: a temp file, fsync, rename; the old file survives any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as stream:
            torch.save({"format": FORMAT, "version": FORMAT_VERSION, **state}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        temporary.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise FaceganError(
            f"could not write the checkpoint {path} ({reason}); the previous checkpoint is intact: "
            "free some disk space and resume."
        ) from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with weights_only=True (no code runs), checking its format and version."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FaceganError(f"there is no checkpoint at {path}.") from None
    except pickle.UnpicklingError as error:
        raise FaceganError(f"{path} was refused: it holds objects other than tensors and plain data ({str(error).splitlines()[0][:160]}).") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise FaceganError(f"{path} is damaged or not a checkpoint ({str(error).splitlines()[0][:160]}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FaceganError(f"{path} is not a facegan checkpoint.")
    if state.get("version") != FORMAT_VERSION:
        raise FaceganError(
            f"{path} is a checkpoint of format {state.get('version')}; this facegan reads format "
            f"{FORMAT_VERSION}: use the facegan version that wrote it."
        )
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run: latest.pt, else the highest epoch-NNNN.pt."""
    directory = checkpoint_dir(run_dir)
    if (directory / LATEST).exists():
        return directory / LATEST
    epochs = sorted(directory.glob("epoch-*.pt"), key=lambda p: int(_EPOCH_FILE.search(p.name).group(1)))
    return epochs[-1] if epochs else None
