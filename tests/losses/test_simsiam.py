"""SimSiamLoss against SimSiam's D (Eq. 1, 3) written out, lightly 1.6.0's NegativeCosineSimilarity,
the authors' pseudo-code, and analytic values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity

from ssl_toolkit.losses import SimSiamLoss

CASES = [(2, 3), (5, 16), (8, 4), (16, 2048), (33, 64)]


def reference_d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, sg(z)) per sample in float64: -(p / |p|) . (z / |z|), z a constant, mean over samples."""
    z = z.detach().double()
    return -torch.stack([(p[i] / p[i].norm()) @ (z[i] / z[i].norm()) for i in range(p.shape[0])]).mean()


def authors_d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam Algorithm 1: ``z = z.detach(); p = normalize(p, dim=1); z = normalize(z, dim=1);
    return -(p*z).sum(dim=1).mean()``."""
    z = z.detach()
    p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    return -(p * z).sum(dim=1).mean()


@pytest.mark.parametrize("n,d", CASES)
def test_matches_formula_with_gradients(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(n * 10 + d)
    p = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = SimSiamLoss()(p, z), reference_d(p, z)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(torch.autograd.grad(ours, p)[0], torch.autograd.grad(ref, p)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,d", CASES)
def test_equals_lightly_and_the_authors_pseudo_code(n: int, d: int) -> None:
    # lightly's SimSiam model detaches z before NegativeCosineSimilarity()(p, z): the same value and
    # the same gradient to p.
    g = torch.Generator().manual_seed(n + d)
    p = torch.randn(n, d, generator=g, requires_grad=True)
    z = torch.randn(n, d, generator=g, requires_grad=True)
    ours = SimSiamLoss()(p, z)
    lightly = NegativeCosineSimilarity()(p, z.detach())
    torch.testing.assert_close(ours, lightly)
    torch.testing.assert_close(ours, authors_d(p, z))
    torch.testing.assert_close(torch.autograd.grad(ours, p)[0], torch.autograd.grad(lightly, p)[0])


def test_stop_gradient_on_the_projection() -> None:
    p = torch.randn(6, 8, requires_grad=True)
    z = torch.randn(6, 8, requires_grad=True)
    SimSiamLoss()(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_analytic_values() -> None:
    e = torch.eye(4, 6)
    assert SimSiamLoss()(2 * e, e).item() == pytest.approx(-1.0, abs=1e-6)  # the minimum
    assert SimSiamLoss()(e, -e).item() == pytest.approx(1.0, abs=1e-6)
    assert SimSiamLoss()(e, e.roll(1, dims=0)).item() == pytest.approx(0.0, abs=1e-6)


def test_fp32_under_autocast_and_bad_shapes() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SimSiamLoss()(torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    with pytest.raises(ValueError, match="p and z"):
        SimSiamLoss()(torch.randn(4, 8), torch.randn(3, 8))
