"""Generate images from a trained run: a grid for people, or a folder of PNGs for metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facegan import viz
from facegan.config import TrainConfig, validate
from facegan.errors import FaceganError
from facegan.models import build_models
from facegan.paths import output_dir, output_file
from facegan.train.checkpoint import load_checkpoint, newest_good_checkpoint
from facegan.train.guard import reporting_disk_errors
from facegan.train.loop import generate, resolve_device
from facegan.train.precision import resolve_precision


def load_generator(path: str | Path, device: torch.device) -> tuple[nn.Module, TrainConfig]:
    """G, in eval mode, from a run directory (its newest intact checkpoint), a checkpoint file, or a
    .safetensors file written by `facegan export`."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = newest_good_checkpoint(path)
        if found is None:
            raise FaceganError(f"{path} holds no checkpoint; give a run directory that has trained at least one epoch.")
        path, checkpoint = found
    elif not path.exists():
        raise FaceganError(f"{path} does not exist; give a run directory (runs/NNNNN-preset), a checkpoint file "
                           "or a .safetensors file from `facegan export`.")
    elif path.suffix.lower() == ".safetensors":
        from facegan.export import load_exported

        weights, config = load_exported(path)
        return _build_generator(path, weights, config).to(device, memory_format=torch.channels_last).eval(), config
    else:
        checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("config"), dict) or not isinstance(checkpoint.get("generator"), dict):
        raise FaceganError(f"{path} is not a complete facegan checkpoint (it lacks the generator or its configuration).")
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:
        raise FaceganError(f"{path} holds a damaged configuration ({error}).") from None
    # The moving average of G when the run keeps one: it is the generator to sample from.
    weights = checkpoint["generator_ema"] if isinstance(checkpoint.get("generator_ema"), dict) else checkpoint["generator"]
    return _build_generator(path, weights, config).to(device, memory_format=torch.channels_last).eval(), config


def _build_generator(path: Path, weights: dict[str, torch.Tensor], config: TrainConfig) -> nn.Module:
    """The configuration's G with `weights` loaded; one sentence if they do not fit."""
    if config.resolution is None:
        raise FaceganError(f"{path} holds a configuration without a resolution; it was not written by a training run.")
    generator, _ = build_models(config.model, config.latent_dim, config.g_width, config.d_width, config.resolution)
    try:
        generator.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as error:
        raise FaceganError(f"the weights in {path} do not fit a {config.model} generator of its own configuration "
                           f"({str(error).strip().splitlines()[0][:160]}).") from None
    return generator


def latents(count: int, latent_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same latent vectors for a seed on any device (drawn on the CPU, then moved)."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


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
