"""Sliced Wasserstein distance over Laplacian-pyramid patches: the pyramid, the 1-D-sliced distance, the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facegan.metrics.swd import (
    laplacian_pyramid,
    reconstruct_pyramid,
    sliced_wasserstein,
    swd,
)

# 32 directions x 4 repeats: a quarter of the default projections, so the file stays quick; every
# ordering asserted below holds with a wide margin at this count (and at the default).
FAST = {"directions": 32}


def _uniform_images(n: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _blob_images(n: int, side: int, seed: int) -> np.ndarray:
    """Smooth images: three soft coloured discs each on a grey ground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    centre = rng.uniform(0, side, size=(n, 3, 2, 1, 1)).astype(np.float32)
    radius = rng.uniform(side / 10, side / 4, size=(n, 3, 1, 1)).astype(np.float32)
    colour = rng.uniform(-100, 100, size=(n, 3, 3)).astype(np.float32)
    weight = np.exp(-((yy - centre[:, :, 0]) ** 2 + (xx - centre[:, :, 1]) ** 2) / (2 * radius**2))  # (n, 3, H, W)
    images = 128 + np.einsum("nkhw,nkc->nhwc", weight, colour)
    return np.clip(images, 0, 255).astype(np.uint8)


def _blur(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius))) for image in images])


@pytest.fixture(scope="module")
def faces(celeba_89_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 512 and the next 512 real CelebA faces, centre-cropped to 89x89 and resized to 64x64."""
    images = []
    for path in sorted(celeba_89_dir.iterdir())[:1024]:
        with Image.open(path) as image:
            width, height = image.size
            top = (height - width) // 2
            square = image.convert("RGB").crop((0, top, width, top + width))
            images.append(np.asarray(square.resize((64, 64), Image.Resampling.BILINEAR)))
    stack = np.stack(images)
    return stack[:512], stack[512:]


@pytest.fixture(scope="module")
def halves(faces: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    return swd(*faces, **FAST)


# ----------------------------------------------------------------------------- pyramid


def test_pyramid_levels_halve_from_the_finest_down() -> None:
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 48, 3)).astype(np.float32)
    pyramid = laplacian_pyramid(images, 3)
    assert [level.shape for level in pyramid] == [(2, 64, 48, 3), (2, 32, 24, 3), (2, 16, 12, 3)]
    assert all(level.dtype == np.float32 for level in pyramid)


def test_pyramid_reconstructs_the_images() -> None:
    images = np.random.default_rng(1).uniform(0, 255, size=(3, 32, 64, 3)).astype(np.float32)
    pyramid = laplacian_pyramid(images, 4)
    np.testing.assert_allclose(reconstruct_pyramid(pyramid), images, atol=1e-3)


def test_pyramid_matches_opencv_pyrdown_pyrup() -> None:
    """Same filters and mirrored borders as the reference's scipy version of cv2.pyrDown/pyrUp."""
    ndimage = pytest.importorskip("scipy.ndimage")
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32)[None, None] / 256

    def down(x: np.ndarray) -> np.ndarray:
        return ndimage.convolve(x, kernel, mode="mirror")[:, :, ::2, ::2]

    def up(x: np.ndarray) -> np.ndarray:
        zeros = np.zeros((*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3]), np.float32)
        zeros[:, :, ::2, ::2] = x
        return ndimage.convolve(zeros, kernel * 4, mode="mirror")

    images = np.random.default_rng(2).uniform(0, 255, size=(2, 3, 32, 16)).astype(np.float32)  # NCHW
    expected = [images.copy()]
    for _ in range(2):
        expected.append(down(expected[-1]))
        expected[-2] = expected[-2] - up(expected[-1])
    ours = laplacian_pyramid(images.transpose(0, 2, 3, 1), 3)
    for level, reference in zip(ours, expected):
        np.testing.assert_allclose(level.transpose(0, 3, 1, 2), reference, atol=1e-3)


def test_pyramid_of_a_flat_image_has_empty_bands() -> None:
    pyramid = laplacian_pyramid(np.full((1, 32, 32, 3), 100.0, np.float32), 3)
    for band in pyramid[:-1]:
        np.testing.assert_allclose(band, 0.0, atol=1e-4)
    np.testing.assert_allclose(pyramid[-1], 100.0, atol=1e-4)


def test_pyramid_rejects_sides_that_do_not_halve_evenly() -> None:
    with pytest.raises(ValueError, match="pyramid levels"):
        laplacian_pyramid(np.zeros((1, 18, 18, 3), np.float32), 3)


# ----------------------------------------------------------------------------- sliced distance


def test_sliced_wasserstein_of_a_set_with_itself_is_zero() -> None:
    points = np.random.default_rng(3).standard_normal((2000, 20)).astype(np.float32)
    assert sliced_wasserstein(points, points) == 0.0
    shuffled = points[np.random.default_rng(4).permutation(len(points))]
    assert sliced_wasserstein(points, shuffled) == pytest.approx(0.0, abs=1e-6)


def test_sliced_wasserstein_of_shifted_gaussians_matches_the_analytic_value() -> None:
    """Isotropic Gaussians shifted by m: each slice's W1 is |<m, u>|, whose mean over the sphere is
    |m| E|u_1| = |m| Gamma(D/2) / (sqrt(pi) Gamma((D+1)/2))."""
    dim, count = 8, 10_000
    rng = np.random.default_rng(5)
    shift = rng.standard_normal(dim)
    shift *= 3.0 / np.linalg.norm(shift)
    a = rng.standard_normal((count, dim)).astype(np.float32)
    b = (rng.standard_normal((count, dim)) + shift).astype(np.float32)
    expected = 3.0 * math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)
    # 1,024 directions: Monte Carlo std of the mean ~2% of the value; sampling bias ~0.5%.
    assert sliced_wasserstein(a, b, directions=256, repeats=4) == pytest.approx(expected, rel=0.07)


@pytest.mark.parametrize("sizes", [(3000, 3000), (3000, 1700), (257, 1024)])
def test_sliced_wasserstein_in_one_dimension_is_the_exact_w1(sizes: tuple[int, int]) -> None:
    """In 1-D every direction is +-1, so the value is the W1 of the two empirical distributions,
    unequal sizes included."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(6)
    a = rng.standard_normal(sizes[0]).astype(np.float32)
    b = rng.gamma(2.0, size=sizes[1]).astype(np.float32)
    value = sliced_wasserstein(a[:, None], b[:, None], directions=4, repeats=1)
    assert value == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-5)


def test_sliced_wasserstein_rejects_sets_of_different_dimension() -> None:
    with pytest.raises(ValueError, match="same D"):
        sliced_wasserstein(np.zeros((10, 3), np.float32), np.zeros((10, 4), np.float32))


# ----------------------------------------------------------------------------- swd figure


def test_swd_names_one_value_per_level_and_their_average() -> None:
    for side, keys in ((64, ["swd64", "swd32", "swd16", "swd_avg"]), (32, ["swd32", "swd16", "swd_avg"])):
        result = swd(_uniform_images(40, side, 7), _blob_images(40, side, 8), **FAST)
        assert list(result) == keys
        assert all(isinstance(value, float) and math.isfinite(value) and value > 0 for value in result.values())
        assert result["swd_avg"] == pytest.approx(np.mean([result[key] for key in keys[:-1]]))


def test_swd_of_a_set_with_itself_is_zero() -> None:
    images = _blob_images(64, 32, 9)
    assert all(value == 0.0 for value in swd(images, images, **FAST).values())


def test_swd_is_deterministic_for_a_seed_and_symmetric() -> None:
    a, b = _blob_images(64, 32, 10), _blob_images(64, 32, 11)
    first = swd(a, b, **FAST)
    assert swd(a, b, **FAST) == first
    assert swd(b, a, **FAST) == pytest.approx(first, rel=1e-6)
    other = swd(a, b, seed=1, **FAST)
    assert other != first
    assert other["swd_avg"] == pytest.approx(first["swd_avg"], rel=0.3)


def test_swd_accepts_sets_of_different_sizes() -> None:
    result = swd(_blob_images(48, 32, 12), _blob_images(80, 32, 13), **FAST)
    assert all(math.isfinite(value) and value > 0 for value in result.values())


def test_swd_separates_smooth_images_from_noise() -> None:
    blobs, other_blobs, noise = _blob_images(300, 32, 14), _blob_images(300, 32, 15), _uniform_images(300, 32, 16)
    same, different = swd(blobs, other_blobs, **FAST), swd(blobs, noise, **FAST)
    for key in same:
        assert different[key] > 3 * same[key], (key, same, different)


def test_swd_rejects_images_it_cannot_compare() -> None:
    images = _uniform_images(4, 32, 17)
    with pytest.raises(ValueError, match="uint8"):
        swd(images.astype(np.float32), images)
    with pytest.raises(ValueError, match="one size"):
        swd(images, _uniform_images(4, 64, 18))
    with pytest.raises(ValueError, match="min_resolution"):
        swd(images, images, min_resolution=64)


# ----------------------------------------------------------------------------- real faces


def test_halves_of_real_faces_are_close_and_blur_moves_them_apart(faces, halves) -> None:
    real, other = faces
    blurred = {radius: swd(real, _blur(other, radius), **FAST) for radius in (0.5, 1.0, 2.0)}
    # Stronger blur, larger distance: at the finest level, where blur removes detail, and on average.
    for key in ("swd64", "swd_avg"):
        values = [halves[key]] + [blurred[radius][key] for radius in (0.5, 1.0, 2.0)]
        assert values == sorted(values) and len(set(values)) == 4, (key, values)
    assert blurred[1.0]["swd64"] > 2 * halves["swd64"]
    assert blurred[2.0]["swd_avg"] > 3 * halves["swd_avg"]


def test_global_brightness_and_contrast_are_normalised_away(faces, halves) -> None:
    """Each patch set is standardised by its own per-channel statistics, as in the reference, so a
    global affine change of pixel values leaves the figure (all but uint8 rounding) unchanged."""
    real, other = faces
    dimmed = (other * 0.5 + 64).astype(np.uint8)
    assert swd(real, dimmed, **FAST) == pytest.approx(halves, rel=0.02)


def test_swapped_colour_channels_show_at_the_coarse_level(faces, halves) -> None:
    real, other = faces
    swapped = swd(real, np.ascontiguousarray(other[..., ::-1]), **FAST)
    assert swapped["swd16"] > 2 * halves["swd16"]
