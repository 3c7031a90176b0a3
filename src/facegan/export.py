"""Export a trained generator as safetensors: tensors and a JSON configuration, nothing that runs code.

`facegan export runs/X --out generator.safetensors` writes G's weights (its EMA weights when the
run keeps them) with the run's configuration in the file's metadata, and the same description
as generator.json beside it, for people to read. `facegan sample generator.safetensors` reads
it back (facegan.generation.read_exported). Unlike a pickle, loading a safetensors file only
parses a JSON header and copies bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import save

from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.files import describe_os_error, sha256_file, write_atomically
from facegan.generation import EXPORT_FORMAT, EXPORT_SUFFIX, EXPORT_VERSION
from facegan.paths import output_file
from facegan.train.checkpoint import resolve_checkpoint


def export_generator(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the generator of a run directory or checkpoint to `out` (.safetensors) and its description
    to `out` with .json; the EMA weights when the checkpoint has them. Returns `out`."""
    out = output_file(out, "--out", suffixes=(EXPORT_SUFFIX,))
    _check_description_path(out.with_suffix(".json"), out)
    path, checkpoint = resolve_checkpoint(source)
    weights = "generator_ema" if checkpoint.get("generator_ema") is not None else "generator"
    if weights not in checkpoint or not isinstance(checkpoint.get("config"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    config = TrainConfig.from_dict(checkpoint["config"])
    # Own contiguous copies: safetensors refuses tensors that share memory or are strided views.
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in checkpoint[weights].items()}
    description = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "weights": weights,
                   "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"), "config": config.to_dict(),
                   **({"labels": checkpoint["labels"]} if config.condition and "labels" in checkpoint else {})}
    metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in description.items()}
    # Serialised in memory and written by us: safetensors' own save_file makes the file private (0o600).
    _write_atomically(out, lambda temporary: temporary.write_bytes(save(tensors, metadata=metadata)))
    description["file"] = out.name
    description["sha256"] = sha256_file(out)
    _write_atomically(out.with_suffix(".json"),
                      lambda temporary: temporary.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8"))
    return out


def _check_description_path(path: Path, out: Path) -> None:
    """The .json beside `out` may be replaced only when it is an earlier export's description."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a folder, unreadable, not JSON, not UTF-8
        description = None
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        raise FaceganError(f"{path} exists and is not a facegan export description, and exporting to {out} would "
                           "overwrite it; move it away or choose another --out.")


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """files.write_atomically, with a disk error told as one sentence."""
    try:
        write_atomically(path, write)
    except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
        raise FaceganError(describe_os_error(error, str(path), "then export again")) from None
