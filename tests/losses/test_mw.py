"""MW loss against Eq. 3 written as a loop, an analytic value, symmetry, the AUC bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import MWLoss


def reference_mw(z_a: torch.Tensor, z_b: torch.Tensor, t: float, reduction: str = "mean") -> torch.Tensor:
    """Sheikholeslami et al. Eq. 3: every positive s(a_i, b_i) against every pooled negative s(a_j, b_k), j != k."""
    a, b = F.normalize(z_a.double(), dim=1), F.normalize(z_b.double(), dim=1)
    n = a.shape[0]
    pooled = [a[j] @ b[k] for j in range(n) for k in range(n) if j != k]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        pos = a[i] @ b[i]
        terms = [-torch.log(torch.sigmoid((pos - s) / t)) for s in pooled]
        loss = loss + (sum(terms) / len(pooled) if reduction == "mean" else sum(terms))
    return loss / n


@pytest.mark.parametrize("n,d,t,reduction", [(2, 3, 0.5, "mean"), (5, 8, 0.1, "mean"), (7, 16, 0.05, "sum"),
                                             (4, 4, 1.0, "sum")])  # fmt: skip
def test_matches_loop_and_gradients(n: int, d: int, t: float, reduction: str) -> None:
    g = torch.Generator().manual_seed(n + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = MWLoss(t, reduction=reduction)(z_a, z_b), reference_mw(z_a, z_b, t, reduction)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for x, y in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(ref, (z_a, z_b))):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,t", [(3, 0.5), (6, 0.01)])
def test_analytic_value_orthonormal_pairs(n: int, t: float) -> None:
    # Positives 1, every pooled negative 0: each term is log(1 + e^{-1/t}); the sum form has N(N-1).
    z = torch.eye(n, n + 1)
    expected = math.log1p(math.exp(-1 / t))
    assert MWLoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert MWLoss(t, reduction="sum")(z, z.clone()).item() == pytest.approx(n * (n - 1) * expected, rel=1e-5, abs=1e-12)


def test_pooled_not_per_query() -> None:
    # Lemma 1: a per-query shift of the scores does not change InfoNCE but does change MW. Query 0's
    # positive is below query 1's negative: the pooled loss sees it, a per-query loss would not.
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])  # s_0+ = 0.6, s_1+ = 1, s(a_0, b_1) = 0, s(a_1, b_0) = 0.8
    t = 0.1
    expected = sum(math.log1p(math.exp((s - p) / t)) for p in (0.6, 1.0) for s in (0.0, 0.8)) / 4
    assert MWLoss(t)(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_symmetric_bounds_auc_fp32_and_bad_arguments() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 8, generator=g), torch.randn(10, 8, generator=g)
    loss = MWLoss(0.1)
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-6)
    # Lemma 2 (mean form, t = 1): the area over the ROC curve is at most L / log 2.
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    s = an @ bn.T
    pos, neg = s.diag(), s[~torch.eye(10, dtype=torch.bool)]
    aoc = (pos[:, None] <= neg[None, :]).float().mean().item()
    assert aoc <= MWLoss(1.0)(a, b).item() / math.log(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        MWLoss(0.0)
    with pytest.raises(ValueError, match="reduction"):
        MWLoss(0.1, reduction="max")
    with pytest.raises(ValueError, match="at least 2 images"):
        loss(a[:1], b[:1])
