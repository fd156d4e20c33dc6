"""BYOLLoss against BYOL Eq. 2 written out, lightly 1.6.0's NegativeCosineSimilarity, solo-learn's
byol_loss_func, and analytic values."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from ssl_toolkit.losses import BYOLLoss

CASES = [(2, 3), (5, 16), (8, 4), (16, 256), (33, 64)]


def reference_byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL Eq. 2 per sample in float64: || p / |p| - z / |z| ||^2, z a constant, mean over samples."""
    z = z.detach().double()
    terms = [((p[i] / p[i].norm()) - (z[i] / z[i].norm())).pow(2).sum() for i in range(p.shape[0])]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("n,d", CASES)
def test_matches_formula_with_gradients(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(n * 10 + d)
    p = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = BYOLLoss()(p, z), reference_byol(p, z)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(torch.autograd.grad(ours, p)[0], torch.autograd.grad(ref, p)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n,d", CASES)
def test_is_two_plus_twice_lightly_and_equals_solo_learn(n: int, d: int) -> None:
    # lightly's BYOL: NegativeCosineSimilarity()(p, z.detach()) = -mean cos; solo-learn's
    # byol_loss_func (simplified=True): 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean().
    g = torch.Generator().manual_seed(n + d)
    p = torch.randn(n, d, generator=g, requires_grad=True)
    z = torch.randn(n, d, generator=g, requires_grad=True)
    ours = BYOLLoss()(p, z)
    lightly = NegativeCosineSimilarity()(p, z.detach())
    solo = 2 - 2 * torch.nn.functional.cosine_similarity(p, z.detach(), dim=-1).mean()
    torch.testing.assert_close(ours, 2 + 2 * lightly)
    torch.testing.assert_close(ours, solo)
    grad_ours, grad_lightly = torch.autograd.grad(ours, p)[0], torch.autograd.grad(lightly, p)[0]
    torch.testing.assert_close(grad_ours, 2 * grad_lightly)


def test_stop_gradient_on_the_target() -> None:
    p = torch.randn(6, 8, requires_grad=True)
    z = torch.randn(6, 8, requires_grad=True)
    BYOLLoss()(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_analytic_values() -> None:
    e = torch.eye(4, 6)
    assert BYOLLoss()(e, 3 * e).item() == pytest.approx(0.0, abs=1e-6)  # same direction: 2 - 2 cos 0
    assert BYOLLoss()(e, -e).item() == pytest.approx(4.0, abs=1e-6)  # opposite: 2 - 2 cos pi
    assert BYOLLoss()(e, e.roll(1, dims=0)).item() == pytest.approx(2.0, abs=1e-6)  # orthogonal


def test_fp32_under_autocast_and_bad_shapes() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BYOLLoss()(torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    with pytest.raises(ValueError, match="p and z"):
        BYOLLoss()(torch.randn(4, 8), torch.randn(4, 9))
