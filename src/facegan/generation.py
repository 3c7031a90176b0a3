"""From a trained generator to uint8 images: the one path that grids, `sample`, metrics and exports share.

- `latents(count, dim, seed)`: the same latent vectors for a seed on any device.
- `generate(G, z)`: images as a saved PNG holds them, in eval mode.
- `sampler(G, dim)`: a sampling function `(count, seed) -> uint8 batches`, what metrics take.
- `load_generator(source)`: the G to sample from in a run directory, a checkpoint or an exported
  .safetensors file (its moving average when the run keeps one).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from facegan.config import TrainConfig, validate
from facegan.errors import FaceganError
from facegan.models import build_models
from facegan.precision import Precision
from facegan.train.checkpoint import resolve_checkpoint

# A sampling function: `count` images of latents drawn from `seed`, uint8 (N, H, W, 3), as one array
# or as batches that together hold `count` (so metrics of 50k images never hold them all).
SampleFn = Callable[[int, int], "np.ndarray | Iterable[np.ndarray]"]

EXPORT_FORMAT = "facegan-generator"
EXPORT_VERSION = 1
EXPORT_SUFFIX = ".safetensors"
WEIGHTS = ("ema", "raw")  # which G of a checkpoint: its moving average (when kept), or the trained weights


def latents(count: int, latent_dim: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The same latent vectors for a seed on any device (drawn on the CPU, then moved)."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), as a saved PNG holds it."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256, precision: Precision | None = None,
             labels: torch.Tensor | None = None) -> np.ndarray:
    """uint8 images from latent vectors (and, for a conditional G, labels), in eval mode (BatchNorm's running statistics).

    `precision` (default float32) lets bulk sampling use bf16 where it is fast; the result is
    quantised to uint8 either way, so they differ by at most a grey level here and there.
    """
    was_training = generator.training
    generator.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    conditions = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    try:
        with torch.inference_mode(), autocast():
            return np.concatenate([to_uint8(generator(chunk) if c is None else generator(chunk, c))
                                   for chunk, c in zip(z.split(batch_size), conditions)])
    finally:
        generator.train(was_training)


def sampler(generator: nn.Module, latent_dim: int, *, batch_size: int = 500, precision: Precision | None = None) -> SampleFn:
    """The sampling function of a generator: `(count, seed)` -> batches of at most `batch_size` uint8 images.

    Latents are drawn for all `count` at once (so a seed means the same images at any batch size);
    images are made a batch at a time, which bounds memory, not speed.
    """
    device = next(generator.parameters()).device

    def sample(count: int, seed: int) -> Iterator[np.ndarray]:
        z = latents(count, latent_dim, seed, device)
        return (generate(generator, chunk, precision=precision) for chunk in z.split(batch_size))

    return sample


# ----------------------------------------------------------------------------- loading


def load_generator(source: str | os.PathLike, device: torch.device | str = "cpu", *,
                   which: str = "ema") -> tuple[nn.Module, TrainConfig]:
    """G in eval mode from a run directory (its newest intact checkpoint), a checkpoint file, or a
    .safetensors file written by `facegan export`; with its configuration.

    `which="ema"` (the default) is the generator to sample from: the moving average when the run
    keeps one, else G itself; `which="raw"` is always G's own trained weights.
    """
    if which not in WEIGHTS:
        raise ValueError(f"which must be one of {WEIGHTS}, not {which!r}")
    path = Path(source).expanduser()
    if path.suffix.lower() == EXPORT_SUFFIX and path.is_file():
        weights, config = read_exported(path)
    else:
        if not path.exists():
            raise FaceganError(f"{path} does not exist; give a run directory (runs/NNNNN-preset), a checkpoint file "
                               "or a .safetensors file from `facegan export`.")
        path, checkpoint = resolve_checkpoint(path)
        config = checkpoint_config(path, checkpoint)
        weights = checkpoint["generator"]
        if which == "ema" and isinstance(checkpoint.get("generator_ema"), dict):
            weights = checkpoint["generator_ema"]
    generator = build_generator(config, weights, path)
    return generator.to(device, memory_format=torch.channels_last).eval(), config


def checkpoint_config(path: Path, checkpoint: dict) -> TrainConfig:
    """The validated configuration a checkpoint holds; one sentence when it lacks G or the configuration is damaged."""
    if not isinstance(checkpoint.get("config"), dict) or not isinstance(checkpoint.get("generator"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}).") from None
    return config


def build_generator(config: TrainConfig, weights: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """The configuration's G with `weights` loaded; one sentence if they do not fit."""
    if config.resolution is None:
        raise FaceganError(f"{source} holds a configuration without a resolution; it was not written by a training run.")
    generator, _ = build_models(config.model, config.latent_dim, config.g_width, config.d_width, config.resolution)
    try:
        generator.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as error:
        raise FaceganError(f"the weights in {source} do not fit a {config.model} generator of its own configuration "
                           f"({str(error).strip().splitlines()[0][:160]}).") from None
    return generator


def read_exported(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], TrainConfig]:
    """The weights and configuration of a file written by `facegan export`; no code runs."""
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
    if metadata.get("format") != EXPORT_FORMAT:
        raise FaceganError(f"{path} is not a facegan generator (its metadata names no facegan format); "
                           "make one with `facegan export RUN --out FILE`.")
    if metadata.get("version") != str(EXPORT_VERSION):
        raise FaceganError(f"{path} is a generator of format {metadata.get('version')}; this facegan reads format "
                           f"{EXPORT_VERSION}: use the facegan version that wrote it.")
    try:
        config = TrainConfig.from_dict(json.loads(metadata["config"]))
        validate(config)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}); export it again.") from None
    return tensors, config
