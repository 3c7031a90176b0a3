"""Decoding any image a user has into a square RGB uint8 array."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facegan.data.images import DecodeOptions, SkipImage, centre_box, decode_image

RNG = np.random.default_rng(0)


def encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def halves(width: int = 96, height: int = 64) -> Image.Image:
    """Red left half, blue right half: orientation and crops are easy to see in the result."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(pixels)


def test_centre_box():
    assert centre_box(178, 218, 178) == (0, 20, 178, 198)
    assert centre_box(300, 200, None) == (50, 0, 250, 200)
    with pytest.raises(SkipImage, match="smaller than the 178x178 crop"):
        centre_box(89, 109, 178)


def smooth(width: int = 170, height: int = 150) -> np.ndarray:
    """Ramps in red (left to right) and green (top to bottom), waves in blue: JPEG and WebP keep it within a
    few grey levels, and a flip, a shifted crop or swapped channels move it by tens."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    blue = 127.5 + 100 * np.sin(x / 9) * np.cos(y / 13)
    return np.stack([255 * x / (width - 1), 255 * y / (height - 1), blue], axis=-1).round().astype(np.uint8)


def pillow_reference(pixels: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """What Pillow alone makes of the same pixels: crop the square, resize it bilinearly."""
    return np.asarray(Image.fromarray(pixels).crop(box).resize((size, size), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP", "BMP"])
@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_format_and_size(format, size):
    original = smooth()  # 170x150: the centred square is columns 10..159
    lossy = format in ("JPEG", "WEBP")
    data = encode(Image.fromarray(original), format, **({"quality": 95} if lossy else {}))
    pixels, source = decode_image(data, DecodeOptions(size=size))
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8 and source == (170, 150)
    difference = np.abs(pixels.astype(int) - pillow_reference(original, (10, 0, 160, 150), size))
    mean, largest = float(difference.mean()), int(difference.max())
    # Lossless: equal but for the crop's edge (the decoder's resize may read the pixels beside the box).
    # Lossy: compression, and at 32 px JPEG's reduced-size decoding (about 3 grey levels on average).
    if lossy:
        assert mean < 4.0
    else:
        assert mean < 0.1 and largest <= 2


def test_non_square_images_are_centre_cropped():
    # 96x64 red|blue halves: the centred 64x64 square is half red, half blue.
    pixels, _ = decode_image(encode(halves(), "PNG"), DecodeOptions(size=16))
    assert pixels[:, :7, 0].min() > 200 and pixels[:, 9:, 2].min() > 200


@pytest.mark.parametrize("orientation, red_side", [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_exif_orientation_is_applied(orientation, red_side):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(halves(64, 64), "JPEG", exif=exif, quality=95)
    pixels, _ = decode_image(data, DecodeOptions(size=16))
    red = pixels[..., 0] > 128
    region = {"left": red[:, :6], "right": red[:, -6:], "top": red[:6], "bottom": red[-6:]}[red_side]
    assert region.mean() > 0.95


def test_grayscale_becomes_three_equal_channels():
    data = encode(Image.fromarray(RNG.integers(0, 256, (40, 40), dtype=np.uint8), "L"), "PNG")
    pixels, _ = decode_image(data, DecodeOptions(size=32))
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def test_sixteen_bit_images_are_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    pixels, _ = decode_image(data, DecodeOptions(size=64, filter="box"))
    assert pixels[0, 0, 0] <= 1 and pixels[-1, -1, 0] >= 254
    assert 100 < pixels[32, 32, 0] < 155  # mid-grey stays mid-grey (Pillow's plain convert gives 255)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # fully transparent red
    pixels, _ = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), DecodeOptions(size=16))
    assert pixels.min() == 255


def test_cmyk_jpeg_converts_to_rgb():
    data = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK
    pixels, _ = decode_image(data, DecodeOptions(size=16))
    assert pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 60


def test_palette_images():
    palette = Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("P")
    pixels, _ = decode_image(encode(palette, "PNG"), DecodeOptions(size=16))
    assert pixels.shape == (16, 16, 3)
    # The palette's colours, looked up by Pillow, then resized: the same pixels (PNG keeps the palette exactly).
    expected = np.asarray(palette.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    largest = int(np.abs(pixels.astype(int) - expected).max())
    assert largest == 0


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"definitely not an image", "unreadable"),
        (encode(halves(), "JPEG")[:300], "unreadable"),
        (encode(halves(), "PNG")[:-40], "unreadable"),
        (encode(halves(), "GIF"), "unsupported image format GIF"),
    ],
    ids=["garbage", "truncated-jpeg", "truncated-png", "gif"],
)
def test_bad_files_are_skipped_with_a_reason(data, reason):
    with pytest.raises(SkipImage, match=reason):
        decode_image(data, DecodeOptions(size=16))


def test_jpeg_draft_decoding_stays_close_to_full_decoding(celeba_dir, subset_names):
    """libjpeg's reduced-size decoding is a prefilter; the result must stay visually the same."""
    differences = []
    for name in subset_names[:20]:
        data = (celeba_dir / "img_align_celeba" / name).read_bytes()
        fast, _ = decode_image(data, DecodeOptions(size=64, crop=178, jpeg_draft=True))
        exact, _ = decode_image(data, DecodeOptions(size=64, crop=178, jpeg_draft=False))
        differences.append(np.abs(fast.astype(int) - exact.astype(int)).mean())
    assert 0 < np.mean(differences) < 3.0  # out of 255: a change, but not a visible one
