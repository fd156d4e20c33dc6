"""Hardness-aware contrastive loss against Eq. 9 written as a loop, NT-Xent at alpha = 1, analytic values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import HardContrastiveLoss, NTXentLoss


def reference_hard(z_a: torch.Tensor, z_b: torch.Tensor, t: float, alpha: float) -> torch.Tensor:
    """Wang & Liu Eq. 9 as a loop: per anchor, keep the negatives at or above the upper-alpha
    quantile (the ceil(alpha * (2N-2)) largest), positive in the denominator."""
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    k = max(1, math.ceil(alpha * (2 * n - 2) - 1e-9))
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        negs = sorted((z[i] @ z[j] for j in range(2 * n) if j not in (i, p)), key=lambda s: s.item())[-k:]
        pos = torch.exp(z[i] @ z[p] / t)
        loss = loss - torch.log(pos / (sum(torch.exp(s / t) for s in negs) + pos))
    return loss / (2 * n)


@pytest.mark.parametrize("n,d,t,alpha", [(3, 4, 0.5, 0.25), (6, 16, 0.1, 0.0819), (8, 8, 0.7, 0.5), (5, 3, 1.0, 1.0)])
def test_matches_loop_and_gradients(n: int, d: int, t: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(n + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = HardContrastiveLoss(t, alpha)(z_a, z_b), reference_hard(z_a, z_b, t, alpha)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for x, y in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(ref, (z_a, z_b))):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_alpha_one_is_ntxent_and_fewer_negatives_lower_the_loss() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    assert HardContrastiveLoss(0.3, alpha=1.0)(a, b).item() == pytest.approx(NTXentLoss(0.3)(a, b).item(), rel=1e-6)
    assert HardContrastiveLoss(0.3, alpha=0.2)(a, b) < HardContrastiveLoss(0.3, alpha=0.5)(a, b)


@pytest.mark.parametrize("n,t,alpha", [(4, 0.5, 0.5), (6, 0.2, 0.1)])
def test_analytic_value_orthonormal_pairs(n: int, t: float, alpha: float) -> None:
    # Positives 1, negatives 0: L = -1/t + log(e^{1/t} + K), K = ceil(alpha (2N - 2)).
    z = torch.eye(n, n + 2)
    k = math.ceil(alpha * (2 * n - 2))
    expected = -1 / t + math.log(math.exp(1 / t) + k)
    assert HardContrastiveLoss(t, alpha)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5)


def test_number_of_hard_negatives() -> None:
    # The paper's CIFAR alpha keeps 4095 of 50,000; in a batch of 256 (510 negatives) it keeps 42.
    assert HardContrastiveLoss(alpha=0.0819).num_hard(50_000) == 4095
    assert HardContrastiveLoss(alpha=0.0819).num_hard(510) == 42
    assert HardContrastiveLoss(alpha=1 / 6).num_hard(6) == 1 and HardContrastiveLoss(alpha=1e-6).num_hard(10) == 1


def test_fp32_and_bad_arguments() -> None:
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert HardContrastiveLoss()(a.bfloat16(), b.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        HardContrastiveLoss(0.0)
    with pytest.raises(ValueError, match="alpha"):
        HardContrastiveLoss(0.5, alpha=0.0)
