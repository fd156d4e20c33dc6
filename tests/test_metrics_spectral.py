"""LiDAR and alpha-ReQ against plain numpy computations and constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_toolkit.metrics_spectral import (
    CovarianceStatistics,
    LidarStatistics,
    alpha_req,
    alpha_req_from_statistics,
    covariance_statistics,
    effective_rank,
    lidar,
    lidar_from_statistics,
    lidar_statistics,
)


def plain_effective_rank(lam: list[float], eps: float = 1e-7) -> float:
    total = sum(lam)
    p = [(x / total if total > 0 else 0.0) + eps for x in lam]
    return math.exp(-sum(q * math.log(q) for q in p))


def plain_lidar(views: np.ndarray, delta: float, eps: float = 1e-7) -> float:
    """Thilak et al. 2024, Sec. 3, with loops: S_b over image means, S_w over views, S_w^-1/2 S_b S_w^-1/2."""
    n, q, d = views.shape
    means = [views[x].mean(axis=0) for x in range(n)]
    mu = sum(means) / n
    s_b = sum(np.outer(m - mu, m - mu) for m in means) / (n - 1)
    s_w = sum(np.outer(views[x, j] - means[x], views[x, j] - means[x]) for x in range(n) for j in range(q))
    s_w = s_w / (n * (q - 1)) + delta * np.eye(d)
    w, v = np.linalg.eigh(s_w)
    inv_root = v @ np.diag(w**-0.5) @ v.T
    lam = np.linalg.eigvals(inv_root @ s_b @ inv_root).real
    return plain_effective_rank([max(x, 0.0) for x in lam.tolist()], eps)


def test_effective_rank_matches_the_entropy_formula() -> None:
    lam = [4.0, 2.0, 1.0, 0.5, 0.0]
    assert effective_rank(torch.tensor(lam)) == pytest.approx(plain_effective_rank(lam), rel=1e-12)
    assert effective_rank(torch.full((6,), 3.0)) == pytest.approx(6.0, rel=1e-5)
    assert effective_rank(torch.zeros(8)) == pytest.approx(plain_effective_rank([0.0] * 8), rel=1e-12)


@pytest.mark.parametrize("delta", [1e-4, 1e-1])
def test_lidar_equals_plain_loops_on_random_views(delta: float) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(25, 1, 6, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    views = base + 0.3 * torch.randn(25, 4, 6, generator=g)
    expected = plain_lidar(views.double().numpy(), delta)
    assert lidar(views, delta=delta) == pytest.approx(expected, rel=1e-9)
    assert 1.0 < lidar(views, delta=delta) < 6.0


def separable_views(d: int, spread: float, noise: float) -> torch.Tensor:
    """2d images with means +-spread e_i and 2d views each at mean +- noise e_k.

    S_b = 2 spread^2 / (2d - 1) I and S_w = 2 noise^2 / (2d - 1) I exactly: every direction separates
    the images equally, so LiDAR = d."""
    eye = torch.eye(d, dtype=torch.float64)
    means = torch.cat([spread * eye, -spread * eye])  # (2d, d)
    offsets = torch.cat([noise * eye, -noise * eye])  # (2d, d)
    return means[:, None, :] + offsets[None, :, :]  # (2d images, 2d views, d)


def test_lidar_of_perfectly_separable_images_is_the_dimension() -> None:
    views = separable_views(8, spread=1.0, noise=0.1)
    assert lidar(views) == pytest.approx(plain_effective_rank([1.0] * 8), rel=1e-12)
    assert lidar(views) == pytest.approx(8.0, rel=1e-5)


def test_lidar_of_identical_images_is_one() -> None:
    # Every image has the same 5 views: no direction separates the images, S_b = 0.
    shared = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    views = shared.expand(30, 5, 6)
    assert lidar(views) == pytest.approx(plain_effective_rank([0.0] * 6), rel=1e-9)
    assert lidar(views) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_lidar_counts_the_separating_directions(k: int) -> None:
    # Images differ along k of 8 directions only (equally); views vary isotropically.
    views = separable_views(8, spread=1.0, noise=0.1)
    views[..., k:] = views[..., k:] - views[..., k:].mean(dim=1, keepdim=True)  # image means 0 there
    assert lidar(views) == pytest.approx(k, rel=1e-4)


def test_lidar_ignores_an_invertible_linear_map_without_ridge() -> None:
    g = torch.Generator().manual_seed(2)
    views = torch.randn(40, 1, 5, generator=g, dtype=torch.float64) + 0.5 * torch.randn(
        40, 6, 5, generator=g, dtype=torch.float64
    )
    a = torch.randn(5, 5, generator=g, dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)
    assert lidar(views @ a, delta=0.0) == pytest.approx(lidar(views, delta=0.0), rel=1e-8)
    # RankMe-like covariance ranks are not invariant: the whitening changes the spectrum.
    assert lidar(views * 1e3, delta=0.0) == pytest.approx(lidar(views, delta=0.0), rel=1e-8)


def test_lidar_statistics_add_over_splits_of_the_images() -> None:
    views = torch.randn(20, 3, 4, generator=torch.Generator().manual_seed(3))
    parts = [lidar_statistics(views[:7]), lidar_statistics(views[7:])]
    summed = LidarStatistics(*(a + b for a, b in zip(*parts)))
    assert lidar_from_statistics(summed) == pytest.approx(lidar(views), rel=1e-10)


def test_lidar_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="views"):
        lidar(torch.randn(10, 1, 4))
    with pytest.raises(ValueError, match="views"):
        lidar(torch.randn(10, 4))
    with pytest.raises(ValueError, match="2 images"):
        lidar(torch.randn(1, 3, 4))


def with_covariance_spectrum(n: int, lam: list[float], seed: int = 0) -> torch.Tensor:
    """(n, d) rows, mean exactly 0, whose unbiased covariance has eigenvalues exactly ``lam``."""
    g = torch.Generator().manual_seed(seed)
    d = len(lam)
    basis = torch.cat([torch.ones(n, 1, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)], 1)
    u = torch.linalg.qr(basis).Q[:, 1:]  # orthonormal and orthogonal to the ones vector: centered
    v = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    return math.sqrt(n - 1) * u @ torch.diag(torch.tensor(lam, dtype=torch.float64).sqrt()) @ v.T


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_of_an_exact_power_law_is_its_exponent(alpha: float) -> None:
    x = with_covariance_spectrum(400, [3.0 * k**-alpha for k in range(1, 121)])
    assert alpha_req(x) == pytest.approx(alpha, rel=1e-8)  # default range: ranks 6..100
    assert alpha_req(x, fit_start=0, fit_stop=120) == pytest.approx(alpha, rel=1e-8)
    assert alpha_req(x.float() + 7.0) == pytest.approx(alpha, rel=1e-3)  # shift-invariant, float32 input


def test_alpha_req_equals_a_plain_weighted_fit() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 40, generator=g) @ torch.randn(40, 40, generator=g)
    xs = x.double().numpy()
    cov = np.cov(xs, rowvar=False)
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1][2:30]
    k = np.arange(3, 31, dtype=np.float64)
    # np.polyfit weights multiply the residuals, so sqrt(1/k) weights the squared residuals by 1/k
    slope = np.polyfit(np.log(k), np.log(lam), 1, w=np.sqrt(1.0 / k))[0]
    assert alpha_req(x, fit_start=2, fit_stop=30) == pytest.approx(-slope, rel=1e-6)


def test_alpha_req_of_isotropic_gaussian_is_near_zero_and_rank_k_is_flat() -> None:
    x = torch.randn(8000, 32, generator=torch.Generator().manual_seed(5))
    assert abs(alpha_req(x, fit_start=0, fit_stop=32)) < 0.1
    rank_k = with_covariance_spectrum(100, [2.0] * 5 + [0.0] * 11)  # rank 5, equal variances
    assert alpha_req(rank_k, fit_start=0) == pytest.approx(0.0, abs=1e-8)  # the zeros are left out
    with pytest.raises(ValueError, match="fewer than 2"):
        alpha_req(rank_k, fit_start=5)


def test_covariance_statistics_add_over_splits() -> None:
    x = with_covariance_spectrum(200, [k**-1.3 for k in range(1, 51)])
    parts = [covariance_statistics(x[:50]), covariance_statistics(x[50:])]
    summed = CovarianceStatistics(*(a + b for a, b in zip(*parts)))
    assert alpha_req_from_statistics(summed, 0, 50) == pytest.approx(1.3, rel=1e-8)
