"""DCL / DCLW against the formula written out, NT-Xent without the positive, analytic values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import DCLLoss, DCLWLoss, NTXentLoss


def reference_dcl(z_a: torch.Tensor, z_b: torch.Tensor, t: float, sigma: float | None = None) -> torch.Tensor:
    """Yeh et al. Eq. 6/7 written out: loop over the 2N anchors; negatives = every view but i and p(i)."""
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    if sigma is None:
        w = [1.0] * n
    else:  # DCLW: w_i = 2 - N * exp(s_ii / sigma) / sum_j exp(s_jj / sigma), no gradient
        s = [float(z[i] @ z[i + n]) for i in range(n)]
        total = sum(math.exp(v / sigma) for v in s)
        w = [2 - n * math.exp(v / sigma) / total for v in s]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        neg = sum(torch.exp(z[i] @ z[k] / t) for k in range(2 * n) if k not in (i, p))
        loss = loss - w[i % n] * z[i] @ z[p] / t + torch.log(neg)
    return loss / (2 * n)


def reference_ntxent_without_positive(z_a: torch.Tensor, z_b: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent per anchor, -log(e^pos / D_i), with the positive taken back out of D_i."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        p = (i + n2 // 2) % n2
        denominator = sum(torch.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)  # NT-Xent's D_i
        terms.append(-z[i] @ z[p] / t + torch.log(denominator - torch.exp(z[i] @ z[p] / t)))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (6, 16, 0.1), (10, 8, 0.3)])
def test_dcl_matches_formula_and_gradients(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = DCLLoss(t)(z_a, z_b), reference_dcl(z_a, z_b, t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(ref, (z_a, z_b))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dcl_is_ntxent_without_the_positive_in_the_denominator() -> None:
    g = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    dcl = DCLLoss(0.2)(z_a, z_b).item()
    assert dcl == pytest.approx(reference_ntxent_without_positive(z_a, z_b, 0.2).item(), rel=1e-5)
    assert dcl < NTXentLoss(0.2)(z_a, z_b).item()  # a smaller denominator, a smaller loss


@pytest.mark.parametrize("n,d,t", [(4, 8, 0.1), (9, 5, 0.5)])
def test_dclw_matches_formula_and_gradients(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(10 * n + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = DCLWLoss(t, sigma=0.5)(z_a, z_b), reference_dcl(z_a, z_b, t, sigma=0.5)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    # The reference treats w as constants, so equal gradients also show w is detached.
    for a, b in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(ref, (z_a, z_b))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dclw_weights_average_one_and_favour_hard_positives() -> None:
    g = torch.Generator().manual_seed(5)
    z_a = torch.randn(16, 8, generator=g, requires_grad=True)
    z_b = (z_a.detach() + torch.linspace(0.0, 3.0, 16)[:, None] * torch.randn(16, 8, generator=g)).requires_grad_(True)
    w = DCLWLoss(0.1, sigma=0.5).weights(z_a, z_b)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert not w.requires_grad
    sim = F.cosine_similarity(z_a, z_b, dim=1).detach()
    assert torch.equal(w.argsort(), sim.argsort(descending=True))  # more similar -> smaller weight


@pytest.mark.parametrize("n,t", [(2, 0.5), (5, 0.1)])
def test_analytic_value_orthonormal_pairs(n: int, t: float) -> None:
    # Both views of image i are e_i: the positive similarity is 1, every negative 0, so
    # L_i = -1/t + log(2N - 2); all positives are equal, so DCLW's weights are all 1 and it agrees.
    z = torch.eye(n, n + 2)
    expected = -1 / t + math.log(2 * n - 2)
    assert DCLLoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5)
    assert DCLWLoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5)


def test_symmetric_fp32_and_bad_arguments() -> None:
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    for loss in (DCLLoss(0.2), DCLWLoss(0.2)):
        assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        DCLLoss(0.0)
    with pytest.raises(ValueError, match="sigma"):
        DCLWLoss(0.1, sigma=0.0)
