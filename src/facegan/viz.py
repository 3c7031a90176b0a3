"""Pictures from arrays: image grids and PNG writing (Pillow, no torchvision)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facegan.files import write_atomically


def make_grid(
    images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tile uint8 images (N, H, W, 3) into one (rows*H', cols*W', 3) uint8 picture."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    cell_h, cell_w = h + padding, w + padding
    grid = np.full((rows * cell_h + padding, cols * cell_w + padding, 3), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = padding + r * cell_h, padding + c * cell_w
        grid[top : top + h, left : left + w] = images[i]
    return grid


def caption_rows(grid: np.ndarray, captions: list[str], row_height: int, padding: int = 2,
                 pad_value: int = 255) -> np.ndarray:
    """A make_grid picture with a strip on its left naming each row (e.g. a conditional grid's conditions)."""
    font = ImageFont.load_default()
    width = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) for text in captions)
    strip = Image.new("RGB", (width, grid.shape[0]), (pad_value,) * 3)
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(captions):
        top = padding + i * (row_height + padding)
        draw.text((4, top + row_height // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.concatenate([np.asarray(strip), grid], axis=1)


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    """Write a uint8 (H, W, 3) array as PNG, optionally enlarged by nearest-neighbour `scale`.

    Written to a temporary file and renamed, so a killed process or a full disk never leaves a
    half-written PNG under the final name.
    """
    picture = Image.fromarray(image)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return write_atomically(path, lambda temporary: picture.save(temporary, format="PNG"))
