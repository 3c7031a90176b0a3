"""DiffAugment and flips: differentiable, batched, deterministic, and doing what each op says."""

from __future__ import annotations

import pytest
import torch

from facegan.augment import (
    brightness,
    contrast,
    cutout,
    diff_augment,
    random_flip,
    saturation,
    translation,
)

FULL = "color,translation,cutout"


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=seeded(123)) * 2 - 1


def test_empty_policy_is_the_identity():
    x = images()
    assert diff_augment(x, "", seeded()) is x
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(x, "color,zoom", seeded())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shape_dtype_and_memory_format_are_kept(dtype, channels_last):
    x = images().to(dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    for out in (diff_augment(x, FULL, seeded()), random_flip(x, seeded())):
        assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous(memory_format=fmt)
    # The memory layout changes nothing but speed.
    torch.testing.assert_close(diff_augment(x, FULL, seeded()), diff_augment(x.contiguous(), FULL, seeded()))


def test_gradients_reach_the_images():
    x = images().requires_grad_(True)
    diff_augment(x, FULL, seeded()).square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
    for op in (brightness, saturation, contrast, translation, cutout):
        x.grad = None
        op(x, seeded()).sum().backward()
        assert (x.grad != 0).any(), op.__name__


def test_deterministic_given_a_seeded_generator():
    x = images()
    assert torch.equal(diff_augment(x, FULL, seeded(5)), diff_augment(x, FULL, seeded(5)))
    assert not torch.equal(diff_augment(x, FULL, seeded(5)), diff_augment(x, FULL, seeded(6)))
    assert torch.equal(random_flip(x, seeded(5)), random_flip(x, seeded(5)))


def test_brightness_adds_one_offset_per_image_within_half():
    x = images(64)
    offset = brightness(x, seeded()) - x
    per_image = offset.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image.min() >= -0.5 and per_image.max() < 0.5 and per_image[:, 0].std() > 0.2


def _factor(out: torch.Tensor, x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """The per-image scale f with out - centre = f (x - centre), by least squares."""
    a, b = (x - centre).flatten(1), (out - centre).flatten(1)
    torch.testing.assert_close(b, a * ((a * b).sum(1) / (a * a).sum(1))[:, None], atol=1e-5, rtol=1e-5)
    return (a * b).sum(1) / (a * a).sum(1)


def test_saturation_scales_distance_from_grey_by_zero_to_two():
    x = images(64)
    f = _factor(saturation(x, seeded()), x, x.mean(1, keepdim=True))
    assert f.min() >= 0 and f.max() < 2 and f.min() < 0.3 and f.max() > 1.7


def test_contrast_scales_distance_from_the_mean_by_half_to_one_and_a_half():
    x = images(64)
    f = _factor(contrast(x, seeded()), x, x.mean((1, 2, 3), keepdim=True))
    assert f.min() >= 0.5 and f.max() < 1.5 and f.min() < 0.7 and f.max() > 1.3


def test_translation_moves_content_by_whole_pixels_within_an_eighth():
    size, batch = 32, 200
    x = torch.zeros(batch, 3, size, size)
    x[:, :, 10, 20] = 1  # one lit pixel in every image
    out = translation(x, seeded())
    shifts = set()
    for image in out:
        lit = image.nonzero()
        assert len(lit) == 3 and torch.all(image[tuple(lit.T)] == 1)  # moved, not blurred
        (_, row, col), = lit[:1].tolist()
        assert (lit[:, 1:] == torch.tensor([row, col])).all()  # all channels together
        shifts.add((row - 10, col - 20))
    assert {dy for dy, _ in shifts} == set(range(-4, 5)) and {dx for _, dx in shifts} == set(range(-4, 5))


def test_translation_fills_with_zeros():
    x = torch.ones(50, 3, 16, 16)
    out = translation(x, seeded())
    empty_rows = (out[:, 0].sum(2) == 0).sum(1)  # rows shifted in from outside
    empty_cols = (out[:, 0].sum(1) == 0).sum(1)
    assert ((out == 0) | (out == 1)).all() and empty_rows.max() == 2 and empty_cols.max() == 2
    assert torch.equal(out.sum((1, 2, 3)), 3 * (16 - empty_rows) * (16 - empty_cols))


def test_cutout_zeroes_a_half_size_square_clipped_at_the_borders():
    size = 16
    out = cutout(torch.ones(300, 3, size, size), seeded())
    inside = 0
    for image in out:
        hole = image[0] == 0
        assert torch.equal(hole, (image == 0).all(0))  # all channels together
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        height, width = len(rows), len(cols)
        assert hole.sum() == height * width  # a rectangle...
        assert 0 < height <= 8 and 0 < width <= 8  # ...of at most half the side
        if height < 8:  # ...cut short only by a border
            assert rows[0] == 0 or rows[-1] == size - 1
        if width < 8:
            assert cols[0] == 0 or cols[-1] == size - 1
        inside += height == width == 8
    # Centres are uniform over 0..16 per axis and 9 of those 17 keep the square inside.
    assert 60 < inside < 110  # expected 300 * (9 / 17) ** 2 = 84


def test_random_flip_mirrors_about_half_of_the_images():
    x = images(400, 4)
    out = random_flip(x, seeded())
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all() and 150 < flipped.sum() < 250
