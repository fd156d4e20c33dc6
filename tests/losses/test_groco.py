"""GroCo: the sorter against a second (loop) formulation, permutation properties, the loss against
a loop over anchors, an analytic value, ordered < reversed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import GroCoLoss
from ssl_toolkit.losses.groco import group_ordering_loss, soft_sort


def loop_soft_sort(x: list[float] | torch.Tensor, steepness: float) -> tuple[list, list]:
    """Odd-even transposition network written wire by wire (Petersen et al., ICLR 2022): layer l
    compares (a, a+1) for a = l mod 2, l mod 2 + 2, ...; Cauchy alpha; P starts at the identity and
    mixes columns a, a+1 like the values. Works on python floats or 0-d tensors (for autograd)."""
    n = len(x)
    vals = list(x)
    perm = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for layer in range(n):
        for a in range(layer % 2, n - 1, 2):
            lo, hi = vals[a], vals[a + 1]
            diff = (hi - lo) * steepness
            alpha = 0.5 + (torch.atan(diff) if torch.is_tensor(diff) else math.atan(diff)) / math.pi
            vals[a], vals[a + 1] = alpha * lo + (1 - alpha) * hi, (1 - alpha) * lo + alpha * hi
            for row in perm:
                p, q = row[a], row[a + 1]
                row[a], row[a + 1] = alpha * p + (1 - alpha) * q, (1 - alpha) * p + alpha * q
    return vals, perm


def loop_group_loss(s: list, k: int, steepness: float) -> torch.Tensor:
    """BCE on group membership of ranks, one anchor, as a loop (clamped logs as BCELoss)."""
    _, perm = loop_soft_sort(s, steepness)
    n = len(s)
    total = 0.0
    for i in range(n):
        top = min(max(sum(perm[i][j] for j in range(k, n)), 0.0), 1.0)
        bottom = min(max(sum(perm[i][j] for j in range(k)), 0.0), 1.0)
        t = 1.0 if i >= k else 0.0
        total = total + 0.5 * (_bce(top, t) + _bce(bottom, 1 - t))
    return total / n


def _bce(p, t: float):
    log = torch.log if torch.is_tensor(p) else math.log
    return -(t * max(log(p), -100) if t else 0.0) - ((1 - t) * max(log(1 - p), -100) if t < 1 else 0.0)


def reference_groco(views: list[torch.Tensor], k: int, steepness: float, num_pos: int) -> torch.Tensor:
    """Shvetsova et al. (authors' GroCo) anchor by anchor: positives = other positive views of the
    image, negatives = top-k other images in the anchor's view, both detached and sorted."""
    u = [F.normalize(v.double(), dim=1) for v in views]
    m = u[0].shape[0]
    per_view = []
    for v in range(len(u)):
        terms = []
        for i in range(m):
            pos = sorted((u[v][i] @ u[p][i].detach() for p in range(num_pos) if p != v), key=lambda s: s.item())
            neg = sorted((u[v][i] @ u[v][j].detach() for j in range(m) if j != i), key=lambda s: s.item())[-k:]
            terms.append(loop_group_loss(neg + pos, k, steepness))
        per_view.append(sum(terms) / m)
    return sum(per_view) / len(u)


@pytest.mark.parametrize("n,steepness", [(2, 1.0), (5, 1.0), (11, 1.0), (12, 3.0), (16, 0.5)])
def test_sorter_agrees_with_loop_and_is_doubly_stochastic(n: int, steepness: float) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.rand(4, n, generator=g, dtype=torch.float64) * 2 - 1
    sorted_x, perm = soft_sort(x, steepness)
    for b in range(4):
        vals, ref = loop_soft_sort(x[b].tolist(), steepness)
        torch.testing.assert_close(sorted_x[b], torch.tensor(vals, dtype=torch.float64), rtol=0, atol=1e-6)
        torch.testing.assert_close(perm[b], torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-6)
    ones = torch.ones(4, n, dtype=torch.float64)
    torch.testing.assert_close(perm.sum(dim=1), ones, rtol=0, atol=1e-12)
    torch.testing.assert_close(perm.sum(dim=2), ones, rtol=0, atol=1e-12)
    assert (perm >= 0).all()
    torch.testing.assert_close(torch.einsum("bi,bij->bj", x, perm), sorted_x)  # sorted = x P
    hard, _ = soft_sort(x, 1e6)  # a steep relaxation is the exact sort
    torch.testing.assert_close(hard, x.sort(dim=1).values, rtol=0, atol=1e-4)


def test_ordered_group_scores_lower_than_reversed() -> None:
    neg, pos = [0.1, 0.2, 0.3], [0.7, 0.9]
    ordered = group_ordering_loss(torch.tensor([neg + pos]), 3)
    reversed_ = group_ordering_loss(torch.tensor([[0.7, 0.9] + [0.1, 0.2, 0.3]]), 3)  # negatives above
    assert ordered < reversed_
    # and a loss that never nears 0 at steepness 1 on cosines (the paper's setting), but does at 100
    assert ordered > 0.1 and group_ordering_loss(torch.tensor([neg + pos]), 3, steepness=100.0) < 0.01


def test_analytic_value_one_negative_one_positive() -> None:
    # Both views of image i are e_i, other images orthogonal: positive 1, negative 0. One comparator:
    # alpha = 1/2 + atan(1)/pi = 3/4, P = [[a, 1-a], [1-a, a]], so every BCE term is -log(3/4).
    z = torch.eye(4, 6)
    loss = GroCoLoss(top_k_negatives=1)([z, z.clone()])
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)


@pytest.mark.parametrize(
    "m,v,d,k,steepness,num_pos",
    [(6, 2, 8, 3, 1.0, None), (5, 3, 5, 4, 1.0, None), (7, 4, 16, 2, 2.0, 2), (4, 3, 6, 3, 0.7, 2)],
)
def test_loss_matches_loop_and_gradients(m: int, v: int, d: int, k: int, steepness: float, num_pos) -> None:
    g = torch.Generator().manual_seed(m * 10 + v)
    views = [torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(v)]
    ours = GroCoLoss(top_k_negatives=k, steepness=steepness, positive_views=num_pos)(views)
    ref = reference_groco(views, k, steepness, v if num_pos is None else num_pos)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    for a, b in zip(torch.autograd.grad(ours, views), torch.autograd.grad(ref, views)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_stop_grad_only_the_anchor_gets_gradient() -> None:
    # With one image's projections fed in twice (as anchor rows vs the targets), stop_grad=False
    # must give a different gradient than stop_grad=True.
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(6, 8, generator=g, requires_grad=True) for _ in range(2)]
    g_stop = torch.autograd.grad(GroCoLoss(top_k_negatives=3)(views), views)
    g_full = torch.autograd.grad(GroCoLoss(top_k_negatives=3, stop_grad=False)(views), views)
    assert not torch.allclose(g_stop[0], g_full[0])


def test_fp32_under_autocast_and_bad_arguments() -> None:
    views = [torch.randn(6, 8) for _ in range(3)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert GroCoLoss(top_k_negatives=3)([v.bfloat16() for v in views]).dtype == torch.float32
    with pytest.raises(ValueError, match="top_k_negatives: 10 needs a global batch of more than 10"):
        GroCoLoss()(views)
    with pytest.raises(ValueError, match="positive_views: 4 is more than the 3 views"):
        GroCoLoss(top_k_negatives=3, positive_views=4)(views)
    for kwargs, key in [({"top_k_negatives": 0}, "top_k_negatives"), ({"steepness": 0.0}, "steepness"),
                        ({"positive_views": 1}, "positive_views")]:  # fmt: skip
        with pytest.raises(ValueError, match=key):
            GroCoLoss(**kwargs)
