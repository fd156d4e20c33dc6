"""NTXentLoss against a plain loop over the formula, and an analytic value."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import NTXentLoss


def reference_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR Eq. 1 written out: loop over all 2N anchors, denominator over every k != i."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n2):
        p = (i + n) % n2
        num = torch.exp(z[i] @ z[p] / t)
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)
        total = total - torch.log(num / den)
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 16, 0.1), (8, 4, 1.0), (16, 32, 0.2)])
def test_matches_formula_and_gradients(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z_a = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours = NTXentLoss(temperature=t)(z_a, z_b)
    ref = reference_ntxent(z_a, z_b, t)
    assert ours.dtype == torch.float32  # computed in fp32 by design
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    g_ours = torch.autograd.grad(ours, (z_a, z_b))
    g_ref = torch.autograd.grad(ref, (z_a, z_b))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,t", [(2, 0.5), (4, 0.1), (10, 1.0)])
def test_analytic_value_orthonormal_pairs(n: int, t: float) -> None:
    # Both views of image i are the unit vector e_i: s(pos) = 1, all other pairs 0, so
    # l_i = -log(e^{1/t} / (e^{1/t} + 2N - 2)) = log(1 + (2N - 2) e^{-1/t}) for every anchor.
    z = torch.eye(n, n + 3)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / t))
    assert NTXentLoss(t)(z, z.clone()).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # fp32


def test_symmetric_and_scale_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    loss = NTXentLoss(0.3)
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-6)
    assert loss(a, b).item() == pytest.approx(loss(3 * a, 0.5 * b).item(), rel=1e-5)


def test_fp32_under_autocast() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = NTXentLoss(0.1)(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bad_temperature_and_shapes() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="z_a and z_b"):
        NTXentLoss(0.1)(torch.randn(4, 8), torch.randn(5, 8))
