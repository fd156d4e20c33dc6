"""MV-InfoNCE against the formula written out as a loop, an analytic value, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import LOSSES, MultiViewLoss, MVInfoNCELoss, NTXentLoss


def reference_mv_infonce(views: list[torch.Tensor], t: float) -> torch.Tensor:
    """Koromilas et al. (authors' MVINFONCE) as loops: for each image i, ordered pairs of its views
    over every view la of i against every other embedding (j, lb) != (i, la)."""
    u = [F.normalize(v.double(), dim=1) for v in views]
    n_views, m = len(u), u[0].shape[0]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(m):
        pos = sum(torch.exp(u[la][i] @ u[lb][i] / t) for la in range(n_views) for lb in range(n_views) if lb != la)
        neg = 0.0
        for la in range(n_views):
            for lb in range(n_views):
                for j in range(m):
                    if (j, lb) != (i, la):
                        neg = neg + torch.exp(u[la][i] @ u[lb][j] / t)
        loss = loss - torch.log(pos / neg)
    return loss / m


@pytest.mark.parametrize("m,v,d,t", [(4, 2, 8, 0.5), (6, 3, 5, 0.2), (5, 4, 16, 0.1), (3, 6, 4, 1.0)])
def test_matches_loop_and_gradients(m: int, v: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(m * 10 + v)
    views = [torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(v)]
    ours, ref = MVInfoNCELoss(t)(views), reference_mv_infonce(views, t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, views), torch.autograd.grad(ref, views)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("m,v,t", [(3, 2, 0.5), (5, 4, 0.1)])
def test_analytic_value_orthonormal_images(m: int, v: int, t: float) -> None:
    # Every view of image i is e_i: positives 1, other images 0. For each image the numerator is
    # V(V-1) e^{1/t}; the denominator V [(V-1) e^{1/t} + V(M-1)].
    z = torch.eye(m, m + 1)
    expected = math.log(v * ((v - 1) * math.exp(1 / t) + v * (m - 1))) - math.log(v * (v - 1)) - 1 / t
    assert MVInfoNCELoss(t)([z.clone() for _ in range(v)]).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_two_views_differs_from_pairwise_ntxent_and_is_one_term_per_image() -> None:
    # With V = 2 the denominator pools both anchors' sums: not NT-Xent's average of two logs.
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert MVInfoNCELoss(0.5)([a, b]).item() != pytest.approx(NTXentLoss(0.5)(a, b).item(), rel=1e-3)
    assert isinstance(LOSSES["mv_infonce"](), MultiViewLoss)


def test_fp32_under_autocast_and_bad_arguments() -> None:
    views = [torch.randn(6, 8) for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert MVInfoNCELoss(0.1)([v.bfloat16() for v in views]).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        MVInfoNCELoss(0.0)
    with pytest.raises(ValueError, match="at least 2 views"):
        MVInfoNCELoss()(views[:1])
    with pytest.raises(ValueError, match="one shape"):
        MVInfoNCELoss()([views[0], views[1][:4]])
