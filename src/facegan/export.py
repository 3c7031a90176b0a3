"""Export a trained generator as safetensors: tensors and a JSON configuration, nothing that runs code.

`facegan export runs/X --out generator.safetensors` writes G's weights (its EMA weights when the
run keeps them) with the run's configuration in the file's metadata, and the same description
as generator.json beside it, for people to read. `facegan sample generator.safetensors` reads
it back. Unlike a pickle, loading a safetensors file only parses a JSON header and copies bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from facegan.config import TrainConfig, validate
from facegan.errors import FaceganError
from facegan.files import write_atomically
from facegan.paths import output_file
from facegan.train.checkpoint import load_checkpoint, newest_good_checkpoint
from facegan.train.guard import describe_os_error

FORMAT = "facegan-generator"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def export_generator(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the generator of a run directory or checkpoint to `out` (.safetensors) and its description
    to `out` with .json; the EMA weights when the checkpoint has them. Returns `out`."""
    out = output_file(out, "--out", suffixes=(SUFFIX,))
    path, checkpoint = _checkpoint_of(Path(source).expanduser())
    weights = "generator_ema" if checkpoint.get("generator_ema") is not None else "generator"
    if weights not in checkpoint or not isinstance(checkpoint.get("config"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    config = TrainConfig.from_dict(checkpoint["config"])
    # Own contiguous copies: safetensors refuses tensors that share memory or are strided views.
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in checkpoint[weights].items()}
    description = {"format": FORMAT, "version": FORMAT_VERSION, "weights": weights,
                   "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"), "config": config.to_dict()}
    metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in description.items()}
    # Serialised in memory and written by us: safetensors' own save_file makes the file private (0o600).
    _write_atomically(out, lambda temporary: temporary.write_bytes(save(tensors, metadata=metadata)))
    description["file"] = out.name
    description["sha256"] = _sha256(out)
    _write_atomically(out.with_suffix(".json"),
                      lambda temporary: temporary.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8"))
    return out


def load_exported(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], TrainConfig]:
    """The weights and configuration of a file written by export_generator; no code runs."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 - a safe_open handle, not a dict
    except FileNotFoundError:
        raise FaceganError(f"{path} does not exist; give a file written by `facegan export`.") from None
    except (SafetensorError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise FaceganError(f"{path} is damaged or not a safetensors file ({first}).") from None
    if metadata.get("format") != FORMAT:
        raise FaceganError(f"{path} is not a facegan generator (its metadata names no facegan format); "
                           "make one with `facegan export RUN --out FILE`.")
    if metadata.get("version") != str(FORMAT_VERSION):
        raise FaceganError(f"{path} is a generator of format {metadata.get('version')}; this facegan reads format "
                           f"{FORMAT_VERSION}: use the facegan version that wrote it.")
    try:
        config = TrainConfig.from_dict(json.loads(metadata["config"]))
        validate(config)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}); export it again.") from None
    return tensors, config


def _checkpoint_of(source: Path) -> tuple[Path, dict]:
    if source.is_dir():
        found = newest_good_checkpoint(source)
        if found is None:
            raise FaceganError(f"{source} holds no checkpoint; give a run directory that has trained at least one epoch.")
        return found
    if not source.exists():
        raise FaceganError(f"{source} does not exist; give a run directory (runs/NNNNN-preset) or a checkpoint file.")
    return source, load_checkpoint(source)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """files.write_atomically, with a disk error told as one sentence."""
    try:
        write_atomically(path, write)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
        raise FaceganError(describe_os_error(error, str(path), "then export again")) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
