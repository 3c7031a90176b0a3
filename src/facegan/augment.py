"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) and random flips of reals.

DiffAugment transforms both real and generated images before D sees them, in D's and in G's
update, so that D cannot memorise a small dataset while G still learns the un-augmented
images: every operation is differentiable with respect to the images. Each operation draws one
set of random parameters per image from `generator` (which must live on the images' device),
works on the whole batch at once, and keeps the images' shape, dtype and memory format.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Augmentation = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U[0, 1) number per image, shaped to broadcast over (B, C, H, W)."""
    return torch.rand(len(x), 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) to every pixel of an image."""
    return x + (_uniform(x, generator) - 0.5)


def saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's distance from its grey (channel mean) by a factor in [0, 2)."""
    grey = x.mean(dim=1, keepdim=True)
    return (x - grey) * (_uniform(x, generator) * 2) + grey


def contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's distance from its mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 1 / 8) -> torch.Tensor:
    """Shift each image by whole pixels, up to `ratio` of its side either way; zeros fill in."""
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (batch, 1, 1), generator=generator, device=x.device)
    # Output pixel (i, j) reads source pixel (i - dy, j - dx): a gather, so gradients flow back.
    rows = torch.arange(height, device=x.device).view(1, -1, 1) - dy  # (B, H, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1) - dx  # (B, 1, W)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # (B, H, W)
    images = torch.arange(batch, device=x.device).view(-1, 1, 1)
    pixels = x.permute(0, 2, 3, 1)[images, rows.clamp(0, height - 1), cols.clamp(0, width - 1)]  # (B, H, W, C)
    shifted = torch.where(inside.unsqueeze(-1), pixels, 0).permute(0, 3, 1, 2)
    return shifted.contiguous(memory_format=_memory_format(x))


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 1 / 2) -> torch.Tensor:
    """Zero a square `ratio` of the side wide at a random centre (clipped where it leaves the image)."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # Centres range over the whole image, so a square is often cut off by a border.
    top = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), generator=generator, device=x.device) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), generator=generator, device=x.device) - size_x // 2
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (B, H, W)
    return x * (~hole).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Augmentation, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a comma-separated policy ("color,translation,cutout" as the paper); "" is the identity."""
    assert x.ndim == 4, f"expected (B, C, H, W), got {tuple(x.shape)}"
    for name in (part.strip() for part in policy.split(",")):
        if not name:
            continue
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(POLICIES)}")
        for operation in POLICIES[name]:
            x = operation(x, generator)
    return x


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (faces are roughly symmetric)."""
    flip = torch.rand(len(x), 1, 1, 1, generator=generator, device=x.device) < 0.5
    return torch.where(flip, x.flip(3), x)
