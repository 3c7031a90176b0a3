"""Decode one image file into a square RGB uint8 array: orient, convert, crop, resize.

The same function serves CelebA and any folder, so every source is treated identically and a
zip and its extracted folder give byte-identical arrays.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP"}
_EXIF_ORIENTATION = 0x0112

# All four are antialiased when shrinking: Pillow widens the kernel by the scale factor.
FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
DEFAULT_FILTER = "bilinear"  # torchvision's Resize on PIL images, as Mimicry's CelebA-64 uses.
TRANSPARENT_BACKGROUND = (255, 255, 255)


class SkipImage(Exception):
    """This file cannot become a training image; the message says why."""


@dataclass(frozen=True)
class DecodeOptions:
    """How a source image becomes a training image."""

    size: int = 64
    crop: int | None = None  # side of the centred square, in source pixels; None = largest
    filter: str = DEFAULT_FILTER
    jpeg_draft: bool = True  # let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still suffices


def has_image_suffix(name: str) -> bool:
    """True when a file name ends in one of the supported image suffixes."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def centre_box(width: int, height: int, crop: int | None) -> tuple[int, int, int, int]:
    """The centred square crop (left, top, right, bottom) of a width x height image."""
    side = min(width, height) if crop is None else crop
    if side > width or side > height:
        raise SkipImage(f"{width}x{height} is smaller than the {side}x{side} crop")
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's own convert clips 16-bit values at 255; scale them to 8 bits instead.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        image = Image.fromarray(np.clip(np.rint(values * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, TRANSPARENT_BACKGROUND + (255,))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(data: bytes, options: DecodeOptions) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode image bytes to uint8 (size, size, 3) and the oriented source size (w, h)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette quirks are not the user's problem
            image = Image.open(io.BytesIO(data))
            if image.format not in _FORMATS:
                raise SkipImage(f"unsupported image format {image.format}")
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            width, height = image.size
            if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
                width, height = height, width
            left, top, right, bottom = centre_box(width, height, options.crop)
            if options.jpeg_draft and image.format in ("JPEG", "MPO"):
                # Ask for the smallest DCT scale whose crop still covers the output size.
                scale = options.size / (right - left)
                image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
            image.load()
            image = ImageOps.exif_transpose(image) if orientation != 1 else image
            image = _to_rgb(image)
            # Map the crop box from source pixels into the (possibly reduced) decoded pixels.
            fx, fy = image.width / width, image.height / height
            box = (left * fx, top * fy, right * fx, bottom * fy)
            resized = image.resize((options.size, options.size), FILTERS[options.filter], box=box)
            return np.asarray(resized, dtype=np.uint8), (width, height)
    except SkipImage:
        raise
    except Image.DecompressionBombError:
        raise SkipImage("too many pixels (Pillow's decompression-bomb limit)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        reason = str(error) or type(error).__name__
        raise SkipImage(f"unreadable ({reason})") from None
