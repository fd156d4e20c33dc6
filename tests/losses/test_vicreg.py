"""VICRegLoss against lightly 1.6's VICRegLoss, a plain computation of Eq. 1-6 and an analytic
value. The 1 vs 2 process check is in tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import VICRegLoss as LightlyVICRegLoss

from ssl_toolkit.losses import VICRegLoss


def plain_vicreg(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, mu: float, nu: float) -> torch.Tensor:
    """Eq. 1-6 written out with loops over dimensions (gamma 1, eps 1e-4, unbiased statistics)."""
    n, d = z_a.shape
    invariance = sum(((z_a[b] - z_b[b]) ** 2).sum() for b in range(n)) / (n * d)

    def variance(z: torch.Tensor) -> torch.Tensor:
        out = z.new_zeros(())
        for j in range(d):
            col = z[:, j]
            std = torch.sqrt(((col - col.mean()) ** 2).sum() / (n - 1) + 1e-4)
            out = out + torch.clamp(1 - std, min=0)
        return out / d

    def covariance(z: torch.Tensor) -> torch.Tensor:
        out = z.new_zeros(())
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = ((z[:, i] - z[:, i].mean()) * (z[:, j] - z[:, j].mean())).sum() / (n - 1)
                    out = out + cov**2
        return out / d

    return lam * invariance + mu * (variance(z_a) + variance(z_b)) / 2 + nu * (covariance(z_a) + covariance(z_b))


@pytest.mark.parametrize(
    ("n", "d", "weights"), [(4, 3, (25.0, 25.0, 1.0)), (10, 8, (1.0, 5.0, 0.5)), (32, 6, (0.0, 1.0, 2.0))]
)
def test_equals_lightly_value_and_gradient(n: int, d: int, weights: tuple[float, float, float]) -> None:
    g = torch.Generator().manual_seed(n + d)
    z_a, z_b = torch.randn(n, d, generator=g) * 0.5, torch.randn(n, d, generator=g) * 2  # hinge on and off
    ours_in = [z.clone().requires_grad_(True) for z in (z_a, z_b)]
    theirs_in = [z.clone().requires_grad_(True) for z in (z_a, z_b)]
    ours = VICRegLoss(*weights)(*ours_in)
    theirs = LightlyVICRegLoss(lambda_param=weights[0], mu_param=weights[1], nu_param=weights[2])(*theirs_in)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours.backward(), theirs.backward()
    for mine, other in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(mine.grad, other.grad, rtol=1e-4, atol=1e-6)


def test_equals_the_plain_formula_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(5)
    z_a = (torch.randn(7, 4, generator=g, dtype=torch.float64) * 0.7).requires_grad_(True)
    z_b = (torch.randn(7, 4, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    ours = VICRegLoss(25.0, 25.0, 1.0)(z_a, z_b)
    plain = plain_vicreg(z_a, z_b, 25.0, 25.0, 1.0)
    torch.testing.assert_close(ours.double(), plain, rtol=1e-5, atol=1e-6)
    for mine, other in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(plain, (z_a, z_b)), strict=True):
        torch.testing.assert_close(mine.double(), other, rtol=1e-4, atol=1e-6)


def test_analytic_value_of_a_collapsed_batch() -> None:
    """Every row the same vector: invariance 0, std sqrt(eps) per dimension, no covariance, so
    L = mu * (1 - sqrt(1e-4)) = 25 * 0.99."""
    z = torch.ones(8, 5)
    torch.testing.assert_close(VICRegLoss()(z, z.clone()), torch.tensor(25 * 0.99))


@pytest.mark.parametrize("bad", [{"invariance_weight": -1.0}, {"gamma": 0.0}, {"eps": -1e-4}])
def test_bad_arguments_name_the_keyword(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        VICRegLoss(**bad)
