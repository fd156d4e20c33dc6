"""Label-free spectral quality metrics: LiDAR and alpha-ReQ, from all-reducible sufficient statistics.

Each metric is ``<metric>_from_statistics(<metric>_statistics(x))``. The statistics are float64
sums over images, so under DDP every process computes them on its own rows, sums them with
``ssl_toolkit.distributed.all_reduce_sum`` and gets the 1-process value (up to float64 rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def effective_rank(eigenvalues: Tensor, eps: float = 1e-7) -> float:
    """exp(-sum_i p_i log p_i), p_i = lambda_i / ||lambda||_1 + eps (RankMe's entropy, Garrido et al. 2023).

    Negative round-off is clipped to 0; an all-zero spectrum gives p_i = eps (a value of about 1).

    Args:
        eigenvalues: (K,) non-negative spectrum.
    """
    lam = eigenvalues.double().clamp(min=0)
    total = lam.sum()
    p = (lam / total if total > 0 else torch.zeros_like(lam)) + eps
    return float(torch.exp(-(p * p.log()).sum()))


class LidarStatistics(NamedTuple):
    """Sums over images (float64, all-reducible): n images, q views per image, Sum mu_x,
    Sum mu_x mu_x^T and the within-image scatter Sum_x Sum_j (e_xj - mu_x)(e_xj - mu_x)^T."""

    images: Tensor  # () count n
    views: Tensor  # () q, the views per image, times n (so that it sums over processes)
    mean_sum: Tensor  # (D,)
    mean_outer: Tensor  # (D, D)
    within_scatter: Tensor  # (D, D)


@torch.no_grad()
def lidar_statistics(views: Tensor) -> LidarStatistics:
    """Sufficient statistics of LiDAR for ``views`` (n, q, D): q >= 2 augmented views of n images.

    Every process must hold all q views of its images (the surrogate classes are images).
    """
    if views.ndim != 3 or views.shape[1] < 2 or views.shape[0] == 0:
        raise ValueError(f"views: expected (n, q >= 2, D) embeddings, got {tuple(views.shape)}")
    e = views.detach().double()
    mu = e.mean(dim=1)  # (n, D): mu_x
    centered = (e - mu[:, None]).flatten(0, 1)  # (n q, D)
    n, q = e.shape[:2]
    return LidarStatistics(
        images=e.new_tensor(float(n)),
        views=e.new_tensor(float(n * q)),
        mean_sum=mu.sum(dim=0),
        mean_outer=mu.T @ mu,
        within_scatter=centered.T @ centered,
    )


def lidar_from_statistics(stats: LidarStatistics, delta: float = 1e-4, eps: float = 1e-7) -> float:
    """LiDAR (Thilak et al., ICLR 2024, arXiv 2312.04000, Sec. 3) from (summed) ``LidarStatistics``.

    With mu_x the mean embedding of image x's views and mu the mean of the mu_x::

        S_b = 1/(n-1) Sum_x (mu_x - mu)(mu_x - mu)^T                 (between images)
        S_w = 1/(n(q-1)) Sum_x Sum_j (e_xj - mu_x)(e_xj - mu_x)^T + delta I   (within an image)
        LiDAR = effective_rank(eig(S_w^-1/2 S_b S_w^-1/2))

    The eigenvalues are those of the generalised problem S_b v = lambda S_w v, taken through the
    eigen-decomposition of S_w; eigenvalues at the round-off level of the summed S_b count as 0
    (so images with identical views give about 1, not a rank of round-off noise). LiDAR lies in
    [1, min(D, n - 1)]; it is invariant to an invertible linear map of the embedding when
    delta -> 0 (it sees how well the images separate, not the scale or the whitening of the
    embedding, unlike RankMe).

    Args:
        stats: statistics of all images (sum them over processes first).
        delta: ridge on S_w. 1e-4 as in stable-pretraining's LiDAR callback; the value in the paper
            text was not read (reptrix uses 1e-6). It matters only where S_w is near-singular.
        eps: 1e-7, the RankMe/LiDAR entropy constant for float32 embeddings.

    Raises:
        ValueError: fewer than 2 images or fewer than 2 views per image.
    """
    n, nq = float(stats.images), float(stats.views)
    if n < 2 or nq < 2 * n:
        raise ValueError(f"LiDAR needs >= 2 images with >= 2 views each, got {n:.0f} images, {nq:.0f} views")
    d = stats.mean_sum.shape[0]
    mean = stats.mean_sum / n
    between = (stats.mean_outer - n * torch.outer(mean, mean)) / (n - 1)
    within = stats.within_scatter / (nq - n) + delta * torch.eye(d, dtype=between.dtype, device=between.device)
    w, v = torch.linalg.eigh((within + within.T) / 2)
    if float(w.min()) <= 0:
        raise ValueError("delta: the within-image covariance is singular; use delta > 0")
    root = v / w.sqrt()  # (D, D): V W^-1/2, so root^T S_b root has the eigenvalues of S_w^-1/2 S_b S_w^-1/2
    lidar_matrix = root.T @ between @ root
    lam = torch.linalg.eigvalsh((lidar_matrix + lidar_matrix.T) / 2)
    # S_b comes from sums, Sum mu mu^T - n m m^T: its round-off is ~1e-16 of Sum mu mu^T / (n - 1),
    # amplified by 1 / min eig(S_w). Eigenvalues under that floor (x 1e4) are zeros, not directions.
    floor = 1e-12 * float(torch.diagonal(stats.mean_outer).sum()) / (n - 1) / float(w.min())
    return effective_rank(torch.where(lam > floor, lam, torch.zeros_like(lam)), eps)


def lidar(views: Tensor, delta: float = 1e-4, eps: float = 1e-7) -> float:
    """LiDAR of ``views`` (n, q, D), n images x q augmented views; see :func:`lidar_from_statistics`.

    The paper scores n = 1000 images x q = 50 views (as quoted by re-implementations; ablations
    there show fewer views suffice); n should exceed D for a full-rank S_b.
    """
    return lidar_from_statistics(lidar_statistics(views), delta, eps)


class CovarianceStatistics(NamedTuple):
    """Sums over samples (float64, all-reducible): N, Sum x and Sum x x^T."""

    count: Tensor  # ()
    total: Tensor  # (D,)
    outer: Tensor  # (D, D)


@torch.no_grad()
def covariance_statistics(x: Tensor) -> CovarianceStatistics:
    """Sufficient statistics of the covariance of ``x`` (N, D)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty (N, D) matrix, got {tuple(x.shape)}")
    e = x.detach().double()
    return CovarianceStatistics(e.new_tensor(float(e.shape[0])), e.sum(dim=0), e.T @ e)


def covariance_spectrum(stats: CovarianceStatistics) -> Tensor:
    """Eigenvalues (D,), descending, of the unbiased covariance (Sum x x^T - N m m^T) / (N - 1)."""
    n = float(stats.count)
    if n < 2:
        raise ValueError(f"the covariance needs >= 2 samples, got {n:.0f}")
    mean = stats.total / n
    cov = (stats.outer - n * torch.outer(mean, mean)) / (n - 1)
    return torch.linalg.eigvalsh((cov + cov.T) / 2).flip(0)


def alpha_req_from_statistics(stats: CovarianceStatistics, fit_start: int = 5, fit_stop: int = 100) -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): the decay alpha of lambda_k ~ c k^-alpha.

    lambda_1 >= lambda_2 >= ... are the eigenvalues of the representation covariance. alpha is the
    slope of a least-squares line through (log k, -log lambda_k) over the ranks k = fit_start + 1
    .. fit_stop, each point weighted by 1/k, as in the authors' ``reptrix`` library (``alpha.py``,
    after Stringer et al. 2019), whose default range is ranks 6..100 (``np.arange(5, 100)``).
    Eigenvalues below 1e-12 x lambda_1 (numerical zeros of a rank-deficient matrix) are left
    out. The paper (abstract) finds "well-defined intervals for alpha where models exhibit excellent
    downstream generalization"; small alpha is a flat (noise-like) spectrum, large alpha a collapse
    onto few directions. The interval's exact bounds were not read (the paper's figures).

    Args:
        stats: covariance statistics of all samples (sum them over processes first).
        fit_start, fit_stop: 0-based eigenvalue indices [fit_start, fit_stop); clipped to D.

    Raises:
        ValueError: fewer than 2 usable eigenvalues in the range.
    """
    if not 0 <= fit_start < fit_stop:
        raise ValueError(f"fit_start, fit_stop: need 0 <= fit_start < fit_stop, got {fit_start}, {fit_stop}")
    lam = covariance_spectrum(stats)
    ranks = torch.arange(1, lam.shape[0] + 1, dtype=lam.dtype, device=lam.device)
    keep = lam > 1e-12 * lam[0].clamp(min=0)
    keep[:fit_start] = False
    keep[fit_stop:] = False
    if int(keep.sum()) < 2:
        raise ValueError(
            f"alpha-ReQ: fewer than 2 non-zero eigenvalues at indices [{fit_start}, {fit_stop}) of {lam.shape[0]}"
        )
    k, y = ranks[keep], lam[keep].log()
    w = 1.0 / k
    x = torch.stack([-k.log(), torch.ones_like(k)], dim=1)  # y = alpha (-log k) + c
    coef = torch.linalg.solve(x.T @ (w[:, None] * x), x.T @ (w * y))
    return float(coef[0])


def default_fit_start(dim: int) -> int:
    """``fit_start`` of alpha-ReQ for D = ``dim`` dimensions: the authors' 5 (ranks 6..100) when
    D >= 20, else 0 (every rank: a narrow embedding has too few eigenvalues past the 5th to fit)."""
    return 5 if dim >= 20 else 0


def alpha_req(x: Tensor, fit_start: int = 5, fit_stop: int = 100) -> float:
    """alpha-ReQ of ``x`` (N, D) representations; see :func:`alpha_req_from_statistics`."""
    return alpha_req_from_statistics(covariance_statistics(x), fit_start, fit_stop)
