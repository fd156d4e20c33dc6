"""MV-DHEL against the authors' product form written as a loop, an analytic value, stability."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import MVDHELLoss


def reference_mv_dhel(views: list[torch.Tensor], t: float) -> torch.Tensor:
    """Koromilas et al. (authors' MVDHEL) as loops: -log( sum_{la<la'} e^{pos} / prod_l sum_{j!=i} e^{neg} )."""
    u = [F.normalize(v.double(), dim=1) for v in views]
    n_views, m = len(u), u[0].shape[0]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(m):
        pos = sum(torch.exp(u[la][i] @ u[lb][i] / t) for la in range(n_views) for lb in range(la + 1, n_views))
        prod = 1.0
        for la in range(n_views):
            prod = prod * sum(torch.exp(u[la][i] @ u[la][j] / t) for j in range(m) if j != i)
        loss = loss - torch.log(pos / prod)
    return loss / m


@pytest.mark.parametrize("m,v,d,t", [(4, 2, 8, 0.5), (6, 3, 5, 0.2), (5, 4, 16, 0.3), (3, 6, 4, 1.0)])
def test_matches_loop_and_gradients(m: int, v: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(m * 10 + v)
    views = [torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(v)]
    ours, ref = MVDHELLoss(t)(views), reference_mv_dhel(views, t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, views), torch.autograd.grad(ref, views)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("m,v,t", [(3, 2, 0.5), (5, 4, 0.1)])
def test_analytic_value_orthonormal_images(m: int, v: int, t: float) -> None:
    # Every view of image i is e_i: C(V,2) positives at 1, M-1 same-view negatives at 0 per view.
    z = torch.eye(m, m + 1)
    expected = v * math.log(m - 1) - math.log(v * (v - 1) / 2) - 1 / t
    assert MVDHELLoss(t)([z.clone() for _ in range(v)]).item() == pytest.approx(expected, rel=1e-5)


def test_finite_at_small_temperature_and_in_bf16_autocast() -> None:
    # Nearly collapsed embeddings (as early in training): every similarity is close to 1, so each
    # view's negative sum is ~63 e^{20} and the authors' product over 8 views ~e^{190} overflows fp32.
    g = torch.Generator().manual_seed(0)
    images = torch.randn(1, 32, generator=g) + 0.05 * torch.randn(64, 32, generator=g)
    views = [(images + 0.01 * torch.randn(64, 32, generator=g)).requires_grad_(True) for _ in range(8)]
    u = [F.normalize(v.detach(), dim=1) for v in views]
    product_form = torch.stack([(ui @ ui.T / 0.05).exp().sum(dim=1) for ui in u]).prod(dim=0)
    assert torch.isinf(product_form).any()  # the raw form is not usable here
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MVDHELLoss(0.05)([v.bfloat16() for v in views])
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(v.grad).all() for v in views)
    ref = reference_mv_dhel([v.detach() for v in views], 0.05)  # float64 loop still fits here
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)  # bf16 inputs: 3 significant digits
    with pytest.raises(ValueError, match="temperature"):
        MVDHELLoss(-1.0)
