"""FID, KID and improved precision/recall of two sets of Inception features: NumPy only, no torch.

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the two sets,
  |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)).
- KID (Bińkowski et al. 2018): the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3,
  averaged over random subsets; stylegan2-ada's defaults (100 subsets of up to 1,000).
- Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
  around its points reaching their k-th nearest neighbour (k = 3); precision is the share of
  generated points inside the real manifold, recall the share of real points inside the
  generated one.

Only the trace of sqrtm(S1 S2) enters FID. S1 S2 is similar to the symmetric positive
semi-definite matrix sqrt(S1) S2 sqrt(S1), so that trace is the sum of the square roots of its
eigenvalues: two symmetric eigendecompositions, real by construction, with rounding's tiny
negative eigenvalues of near-singular covariances (fewer samples than dimensions) clipped to 0.
This is what the reference implementations reach with scipy.linalg.sqrtm, an eps * I offset
when the result is not finite and dropping imaginary parts below 1e-3 (tested against them),
at a fraction of sqrtm's time on 2048 x 2048 matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3
_BLOCK_ELEMENTS = 1 << 24  # distances held at once in precision/recall (64 MiB of float32)


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D,) and covariance (D, D), float64, of `count` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be a (N, D) array of at least 2 feature vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased (N - 1) covariance of (N, D) features, in float64."""
    x = _features(features, "features").astype(np.float64)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (len(x) - 1)
    return GaussianStats(mu, (sigma + sigma.T) / 2, len(x))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for symmetric positive semi-definite matrices."""
    try:
        # sigma1 = L L^T makes sigma1 sigma2 similar to L^T sigma2 L: one Cholesky, no eigenvectors.
        lower = np.linalg.cholesky(sigma1)
        inner = lower.T @ sigma2 @ lower
    except np.linalg.LinAlgError:  # singular (fewer samples than dimensions): the square root instead
        values, vectors = np.linalg.eigh(sigma1)
        root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        inner = root @ sigma2 @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """FID: the Fréchet distance between two Gaussian fits."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"the statistics have different dimensions: {a.mu.shape} and {b.mu.shape}")
    mean_term = float(np.sum((a.mu - b.mu) ** 2))
    value = mean_term + float(np.trace(a.sigma) + np.trace(b.sigma)) - 2.0 * trace_sqrt_product(a.sigma, b.sigma)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation over `subsets` random subsets of the unbiased polynomial-kernel MMD^2."""
    real = _features(real, "real").astype(np.float32)
    fake = _features(fake, "fake").astype(np.float32)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"the feature sets have different dimensions: {real.shape[1]} and {fake.shape[1]}")
    dim = real.shape[1]
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        # Dot products in float32 (as stylegan2-ada's), the kernel and its sums in float64.
        within = (np.float64(1 / dim) * (x @ x.T) + 1) ** 3 + (np.float64(1 / dim) * (y @ y.T) + 1) ** 3
        across = (np.float64(1 / dim) * (x @ y.T) + 1) ** 3
        # Off-diagonal means within each set (unbiased), minus twice the mean across them.
        values[i] = ((within.sum() - np.trace(within)) / (m - 1) - across.sum() * 2 / m) / m
    return float(values.mean()), float(values.std())


def _squared_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    d = np.einsum("ij,ij->i", a, a)[:, None] + b_norms[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _rows_per_block(n_cols: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_cols))


def knn_radii(x: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    norms = np.einsum("ij,ij->i", x, x)
    step = _rows_per_block(len(x))
    # Index k, not k - 1: each point is its own nearest neighbour, at distance 0.
    return np.concatenate([np.partition(_squared_distances(x[i : i + step], x, norms), k, axis=1)[:, k]
                           for i in range(0, len(x), step)])


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (distances in float32, as the reference's)."""
    real = _features(real, "real").astype(np.float32)
    fake = _features(fake, "fake").astype(np.float32)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    real_norms = np.einsum("ij,ij->i", real, real)
    fake_inside = 0
    real_inside = np.zeros(len(real), bool)
    step = _rows_per_block(len(real))
    for i in range(0, len(fake), step):
        # One fake-to-real distance block serves both directions.
        d = _squared_distances(fake[i : i + step], real, real_norms)
        fake_inside += int(np.any(d <= real_radii[None, :], axis=1).sum())
        real_inside |= np.any(d <= fake_radii[i : i + step, None], axis=0)
    return fake_inside / len(fake), float(real_inside.mean())
