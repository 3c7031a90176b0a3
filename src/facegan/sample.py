"""Generate images from a trained run: a grid for people, or a folder of PNGs for metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from facegan import viz
from facegan.config import TrainConfig
from facegan.errors import FaceganError
from facegan.models import build_models
from facegan.train.checkpoint import latest_checkpoint, load_checkpoint
from facegan.train.loop import generate, resolve_device


def load_generator(path: str | Path, device: torch.device) -> tuple[nn.Module, TrainConfig]:
    """G from a run directory (its latest checkpoint) or a checkpoint file, in eval mode."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FaceganError(f"{path} holds no checkpoint; give a run directory that has trained at least one epoch.")
        path = found
    elif not path.exists():
        raise FaceganError(f"{path} does not exist; give a run directory (runs/NNNNN-preset) or a checkpoint file.")
    checkpoint = load_checkpoint(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    generator, _ = build_models(config.model, config.latent_dim, config.g_width, config.d_width, config.resolution)
    generator.load_state_dict(checkpoint["generator"])
    return generator.to(device, memory_format=torch.channels_last).eval(), config


def latents(count: int, latent_dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same latent vectors for a seed on any device (drawn on the CPU, then moved)."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def sample(
    source: str | Path, count: int, out: str | Path, *, seed: int = 0, device: str = "auto",
    batch_size: int = 256, progress: bool = True,
) -> Path:
    """Write `count` generated images: one grid if `out` ends in .png, else one PNG per image in folder `out`."""
    if count <= 0:
        raise FaceganError(f"-n must be a positive number of images, not {count}.")
    out = Path(out)
    if out.suffix.lower() == ".png":
        images = sample_array(source, count, seed=seed, device=device, batch_size=batch_size)
        return viz.save_png(viz.make_grid(images, nrow=min(count, max(1, round(math.sqrt(count))))), out)
    if out.exists() and not out.is_dir():
        raise FaceganError(f"{out} is a file; give a folder for one PNG per image, or a name ending in .png for a grid.")
    torch_device = resolve_device(device)
    generator, config = load_generator(source, torch_device)
    out.mkdir(parents=True, exist_ok=True)
    z = latents(count, config.latent_dim, seed, torch_device)
    width = max(6, len(str(count - 1)))
    index = 0
    for chunk in tqdm(z.split(batch_size), desc="sample", unit="batch", disable=not progress):
        for image in generate(generator, chunk, batch_size):
            Image.fromarray(image).save(out / f"{index:0{width}d}.png")
            index += 1
    return out


def sample_array(source: str | Path, count: int, *, seed: int = 0, device: str = "auto", batch_size: int = 256) -> np.ndarray:
    """`count` generated images as uint8 (N, H, W, 3), for measuring in memory."""
    torch_device = resolve_device(device)
    generator, config = load_generator(source, torch_device)
    return generate(generator, latents(count, config.latent_dim, seed, torch_device), batch_size)
