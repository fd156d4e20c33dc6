"""VICReg: variance, invariance and covariance regularization (Bardes et al., 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.checks import check_positive
from ssl_toolkit.distributed import gather_with_grad


class VICRegLoss(nn.Module):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022, arXiv 2105.04906, Eq. 1-6)::

        s(Z, Z')   = mean_b ||z_b - z'_b||^2 / D                          (invariance, Eq. 5)
        v(Z)       = mean_j max(0, gamma - sqrt(Var(z_.j) + eps))         (variance, Eq. 1)
        c(Z)       = sum_{i != j} Cov(Z)_ij^2 / D                         (covariance, Eq. 3-4)
        L = lambda s(Z, Z') + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z'))    (Eq. 6, authors' code)

    Var and Cov are the unbiased (N - 1) statistics. The invariance term is over this process's
    rows (its mean over equal-sized processes is the global one); the variance and covariance terms
    use the projections of **every** process, gathered with gradient (``gather_with_grad``, as the
    authors' ``FullGatherLayer``), so with DDP's gradient averaging the loss and the gradients
    equal one process on the global batch. The variance term is halved over the two views as in
    the authors' code and lightly 1.6 (solo-learn sums the two views: its ``var_loss_weight`` is
    twice this ``variance_weight``). fp32 under autocast.

    Args:
        invariance_weight: lambda (paper: 25).
        variance_weight: mu (paper: 25).
        covariance_weight: nu (paper: 1).
        gamma: target standard deviation (paper: 1).
        eps: added to the variance before the square root (paper: 1e-4).

    Shapes:
        z_a, z_b: (N, D) projections (expander outputs) of the two views, N >= 2 over all
        processes. Returns a scalar.

    Raises:
        ValueError: a negative weight, or a non-positive ``gamma`` or ``eps``.

    Example:
        >>> VICRegLoss()(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        weights = (
            ("invariance_weight", invariance_weight),
            ("variance_weight", variance_weight),
            ("covariance_weight", covariance_weight),
        )
        for name, value in weights:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
        check_positive("gamma", gamma)
        check_positive("eps", eps)
        self.invariance_weight, self.variance_weight = float(invariance_weight), float(variance_weight)
        self.covariance_weight, self.gamma, self.eps = float(covariance_weight), float(gamma), float(eps)

    def variance(self, z: Tensor) -> Tensor:
        """v(Z), Eq. 1: hinge on the per-dimension standard deviation of (N, D) rows."""
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def covariance(z: Tensor) -> Tensor:
        """c(Z), Eq. 3-4: squared off-diagonal covariances of (N, D) rows, summed, over D."""
        n, d = z.shape
        z = z - z.mean(dim=0)
        cov = (z.T @ z) / (n - 1)
        return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            z_a, z_b = z_a.float(), z_b.float()
            invariance = F.mse_loss(z_a, z_b)
            z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
            variance = (self.variance(z_a) + self.variance(z_b)) / 2
            covariance = self.covariance(z_a) + self.covariance(z_b)
            return (
                self.invariance_weight * invariance
                + self.variance_weight * variance
                + self.covariance_weight * covariance
            )
