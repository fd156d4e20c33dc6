"""Barlow Twins: redundancy reduction on the cross-correlation of two views (Zbontar et al., 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_toolkit.checks import check_positive
from ssl_toolkit.distributed import all_reduce_with_grad, world_size


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al., ICML 2021, arXiv 2103.03230, Eq. 1-2).

    Each view's projections are standardized per dimension over the batch (mean 0, std 1: the
    authors' affine-free BatchNorm, biased variance + ``eps``), then::

        C_ij = sum_b za_bi zb_bj / N                                   (Eq. 2)
        L    = scale_loss * ( sum_i (1 - C_ii)^2 + lambd * sum_i sum_{j != i} C_ij^2 )   (Eq. 1)

    Under torch.distributed the batch mean, the variance and C are sums over **every** process's
    rows (``all_reduce_with_grad``, N the global batch), so each process computes the loss of one
    process on the global batch and its rows get the gradient of every process's copy of it: with
    DDP's gradient averaging this equals one process on the global batch. The authors and lightly
    1.6 standardize with each process's own statistics and average C; on one process all agree.
    fp32 under autocast.

    Args:
        lambd: lambda, weight of the redundancy (off-diagonal) term (paper: 5.1e-3).
        scale_loss: a constant factor on the loss (1: the paper; solo-learn's configs use 0.1,
            the authors' first code 0.024); it only rescales the gradient.
        eps: added to the variance (BatchNorm's 1e-5).

    Shapes:
        z_a, z_b: (N, D) projections of the two views, N >= 2 per process. Returns a scalar, the
        same on every process.

    Raises:
        ValueError: a non-positive ``lambd``, ``scale_loss`` or ``eps``.

    Example:
        >>> BarlowTwinsLoss(lambd=0.0051)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, lambd: float = 0.0051, scale_loss: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        for name, value in (("lambd", lambd), ("scale_loss", scale_loss), ("eps", eps)):
            check_positive(name, value)
        self.lambd, self.scale_loss, self.eps = float(lambd), float(scale_loss), float(eps)

    def standardize(self, z: Tensor, n: int) -> Tensor:
        """(N, D) -> (N, D) with mean 0 and biased variance 1 (+eps) over the ``n`` rows of all processes."""
        mean = all_reduce_with_grad(z.sum(dim=0)) / n
        var = all_reduce_with_grad((z - mean).pow(2).sum(dim=0)) / n
        return (z - mean) / torch.sqrt(var + self.eps)

    def cross_correlation(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """C (D, D) of Eq. 2 over the global batch."""
        n = z_a.shape[0] * world_size()
        za, zb = self.standardize(z_a.float(), n), self.standardize(z_b.float(), n)
        return all_reduce_with_grad(za.T @ zb) / n

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            c = self.cross_correlation(z_a, z_b)
            on_diag = (torch.diagonal(c) - 1).pow(2).sum()
            off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
            return self.scale_loss * (on_diag + self.lambd * off_diag)
