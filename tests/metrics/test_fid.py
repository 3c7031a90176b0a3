"""FID, KID and precision/recall math against small float64 NumPy/SciPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from facegan.metrics import fid
from facegan.metrics.fid import (
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    precision_recall,
)


def _features(n: int, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Non-negative, skewed, correlated features, a little like Inception's pool features."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1000 + dim).normal(size=(dim, dim)) / np.sqrt(dim)
    return (np.abs(rng.normal(size=(n, dim)) @ mixing) ** 1.5 * scale + shift).astype(np.float32)


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance: scipy's sqrtm of the product, eps offset if not finite, real part."""
    mu1, mu2 = x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)
    s1, s2 = np.cov(x.astype(np.float64), rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_gaussian_stats_are_float64_mean_and_unbiased_covariance():
    x = _features(300, 16, 0)
    stats = gaussian_stats(x)
    assert stats.mu.dtype == stats.sigma.dtype == np.float64 and stats.count == 300
    np.testing.assert_allclose(stats.mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-14)


def test_frechet_distance_matches_scipy_sqrtm():
    x, y = _features(500, 64, 1), _features(400, 64, 2, scale=1.2, shift=0.1)
    assert frechet_distance(gaussian_stats(x), gaussian_stats(y)) == pytest.approx(_reference_fid(x, y), rel=1e-9)


def test_frechet_distance_of_known_gaussians():
    """Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2, exactly."""
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    first = fid.GaussianStats(np.zeros(3), np.diag(a), 10)
    second = fid.GaussianStats(np.array([1.0, 2.0, 0.0]), np.diag(b), 10)
    assert frechet_distance(first, second) == pytest.approx(5 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-12)


def test_frechet_distance_is_symmetric_and_zero_for_identical_sets():
    x, y = gaussian_stats(_features(500, 64, 3)), gaussian_stats(_features(500, 64, 4, shift=0.05))
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-10)
    assert frechet_distance(x, y) > 0.1
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9 * np.trace(x.sigma))


@pytest.mark.parametrize("n", [20, 63])
def test_near_singular_covariances_fewer_samples_than_dimensions(n):
    """n < dim: both covariances are singular; the eigenvalue path still matches the reference."""
    x, y = _features(n, 64, 5), _features(n, 64, 6, scale=1.3)
    ours = frechet_distance(gaussian_stats(x), gaussian_stats(y))
    assert np.isfinite(ours)
    assert ours == pytest.approx(_reference_fid(x, y), rel=1e-6)
    sx = gaussian_stats(x)
    assert frechet_distance(sx, sx) == pytest.approx(0.0, abs=1e-6 * np.trace(sx.sigma))


def test_cholesky_and_eigendecomposition_paths_agree(monkeypatch):
    x, y = gaussian_stats(_features(400, 32, 7)), gaussian_stats(_features(300, 32, 8, shift=0.2))
    fast = fid.trace_sqrt_product(x.sigma, y.sigma)

    def refuse(matrix):
        raise np.linalg.LinAlgError("forced")

    monkeypatch.setattr(fid.np.linalg, "cholesky", refuse)
    assert fid.trace_sqrt_product(x.sigma, y.sigma) == pytest.approx(fast, rel=1e-10)


def _naive_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, as a plain double loop in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_a_naive_loop_over_the_same_subsets():
    real, fake = _features(40, 12, 9), _features(30, 12, 10, shift=0.3)
    subsets, size, seed = 3, 20, 5
    rng = np.random.default_rng(seed)
    expected = []
    for _ in range(subsets):
        f = fake[rng.choice(len(fake), size, replace=False)]
        r = real[rng.choice(len(real), size, replace=False)]
        expected.append(_naive_mmd(f, r))
    mean, std = kernel_inception_distance(real, fake, subsets=subsets, subset_size=size, seed=seed)
    assert mean == pytest.approx(np.mean(expected), rel=1e-5)
    assert std == pytest.approx(np.std(expected), rel=1e-4)


def test_kid_of_whole_sets_is_the_unbiased_mmd_and_about_zero_for_two_halves():
    real, fake = _features(25, 8, 11), _features(25, 8, 12, scale=1.5)
    mean, std = kernel_inception_distance(real, fake, subsets=2, subset_size=1000)
    # Each "subset" is the whole set in another order, so the values differ only by float32 rounding
    # of the dot products (how much depends on the BLAS: 0 on one machine here, 3e-9 relative on another).
    assert mean == pytest.approx(_naive_mmd(fake, real), rel=1e-5) and std == pytest.approx(0, abs=1e-7 * mean)
    one = _features(2000, 16, 13)
    mean, std = kernel_inception_distance(one[:1000], one[1000:], subsets=20, subset_size=500)
    different, _ = kernel_inception_distance(one[:1000], _features(1000, 16, 14, shift=0.2), subsets=20, subset_size=500)
    assert abs(mean) < 3 * std + 1e-4 and different > 20 * abs(mean)


def _brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    real_radii = np.sort(cdist(real, real), axis=1)[:, k]
    fake_radii = np.sort(cdist(fake, fake), axis=1)[:, k]
    across = cdist(fake, real)
    precision = np.mean([(across[i] <= real_radii).any() for i in range(len(fake))])
    recall = np.mean([(across[:, j] <= fake_radii).any() for j in range(len(real))])
    return precision, recall


@pytest.mark.parametrize("block", [None, 37])
def test_precision_recall_match_brute_force_knn(monkeypatch, block):
    if block is not None:  # distances in many small blocks give the same answer
        monkeypatch.setattr(fid, "_BLOCK_ELEMENTS", block)
    real, fake = _features(80, 16, 15), _features(60, 16, 16, scale=1.4, shift=0.2)
    precision, recall = precision_recall(real, fake, k=3)
    expected = _brute_force_pr(real, fake, 3)
    assert (precision, recall) == pytest.approx(expected, abs=1e-12)
    assert 0 < precision < 1 and 0 < recall < 1


def test_precision_recall_of_a_set_with_itself_is_one():
    x = _features(50, 8, 17)
    assert precision_recall(x, x) == (1.0, 1.0)


def test_bad_features_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(np.zeros((3, 4)), np.zeros((10, 4)))
