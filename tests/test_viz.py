"""facegan.viz: where make_grid puts each image and its padding, and PNGs that hold exactly the pixels given."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegan.viz import make_grid, save_png


def distinct(n: int, h: int = 4, w: int = 6) -> np.ndarray:
    """n images, each filled with its own colour (i + 1, 2 (i + 1), 3 (i + 1)), never the pad value."""
    colours = np.array([[(i + 1), 2 * (i + 1), 3 * (i + 1)] for i in range(n)], np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, h, w, 3)).copy()


def test_a_grid_is_near_square_row_by_row_with_padding_around_every_cell():
    images = distinct(5)  # 5 images: 3 columns, 2 rows
    grid = make_grid(images)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3) and grid.dtype == np.uint8
    filled = np.zeros(grid.shape[:2], bool)
    for i in range(5):
        r, c = divmod(i, 3)
        top, left = 2 + r * 6, 2 + c * 8
        assert np.array_equal(grid[top : top + 4, left : left + 6], images[i]), f"image {i}"
        filled[top : top + 4, left : left + 6] = True
    # Everything else, the sixth cell included, is padding in the pad value.
    assert (grid[~filled] == 255).all()


def test_nrow_sets_the_columns_and_padding_and_its_value_are_honoured():
    images = distinct(4)
    row = make_grid(images, nrow=4, padding=1, pad_value=7)
    assert row.shape == (1 * 5 + 1, 4 * 7 + 1, 3)
    assert np.array_equal(row[1:5, 1 + 7 : 1 + 7 + 6], images[1])
    assert (row[0] == 7).all() and (row[:, 7] == 7).all() and (row[-1] == 7).all()
    column = make_grid(images, nrow=1, padding=0)
    assert np.array_equal(column, images.reshape(16, 6, 3))  # no padding: the images stacked, nothing else
    assert make_grid(images[:1]).shape == (4 + 4, 6 + 4, 3)


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 3, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.uint8)], ids=["float", "channels-first", "one-image"])
def test_make_grid_refuses_anything_but_a_uint8_nhwc_batch(bad):
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W, 3\)"):
        make_grid(bad)


def test_save_png_round_trips_every_pixel_and_leaves_no_temporary_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "faces.png")
    assert path == tmp_path / "faces.png"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert np.array_equal(np.asarray(png), image)
    save_png(image[::-1].copy(), path)  # replaces the old picture
    assert np.array_equal(np.asarray(Image.open(path)), image[::-1])
    assert [p.name for p in tmp_path.iterdir()] == ["faces.png"]


def test_save_png_scales_by_whole_pixels_and_makes_its_folder(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "new" / "big.png", scale=3)
    assert np.array_equal(np.asarray(Image.open(path)), image.repeat(3, axis=0).repeat(3, axis=1))
