"""MoCHi against a per-query loop, MoCo v2 without mixing, the synthetic negatives' geometry, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses.mochi import MoCHiLoss


def reference_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo v2 InfoNCE written directly: logits [q.k | q.queue] / t, label 0, mean."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1), F.normalize(queue.detach(), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / t
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def reference_loop(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, mixed: torch.Tensor, query_mixed: torch.Tensor, t: float
) -> torch.Tensor:
    """One query at a time: -l_pos/t + log sum exp over [positive, queue, H_i, H'_i] / t."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1), F.normalize(queue.detach(), dim=1)
    terms = []
    for i in range(q.shape[0]):
        others = [q[i] @ queue[j] for j in range(queue.shape[0])]
        others += [q[i] @ h for h in mixed[i]] + [q[i] @ h for h in query_mixed[i]]
        pos = q[i] @ k[i]
        terms.append(-pos / t + torch.log(torch.exp(pos / t) + sum(torch.exp(o / t) for o in others)))
    return torch.stack(terms).mean()


def inputs(b: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    return q, torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(k, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "b,d,k,n,s,s2,t", [(3, 8, 20, 5, 4, 3, 0.2), (5, 6, 12, 12, 7, 0, 0.5), (4, 5, 9, 3, 0, 2, 0.1)]
)
def test_matches_per_query_loop_with_same_synthetics(b: int, d: int, k: int, n: int, s: int, s2: int, t: float) -> None:
    q, key, queue = inputs(b, d, k, seed=b + d + k)
    loss_fn = MoCHiLoss(t, num_hard=n, num_mixed=s, num_query_mixed=s2)
    ours, logs = loss_fn(q, key, queue, generator=torch.Generator().manual_seed(7))
    mixed, query_mixed = loss_fn.synthetic_negatives(q, queue, generator=torch.Generator().manual_seed(7))
    assert mixed.shape == (b, s, d) and query_mixed.shape == (b, s2, d)
    ref = reference_loop(q, key, queue, mixed, query_mixed, t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
    # The reference holds the synthetics as constants, so equal gradients show they are detached.
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    assert all(not v.requires_grad and v.dim() == 0 for v in logs.values())
    assert ("hard_mixed_mean_sim" in logs) == (s > 0) and ("query_mixed_mean_sim" in logs) == (s2 > 0)


def test_no_mixing_is_moco_v2() -> None:
    q, key, queue = inputs(6, 8, 30, seed=1)
    ref = reference_moco(q, key, queue, 0.2).item()
    assert MoCHiLoss(0.2, num_hard=10, num_mixed=5, num_query_mixed=5)(q, key, queue, mix=False)[
        0
    ].item() == pytest.approx(ref, rel=1e-12)
    assert MoCHiLoss(0.2, num_hard=10, num_mixed=0, num_query_mixed=0)(q, key, queue)[0].item() == pytest.approx(
        ref, rel=1e-12
    )
    assert MoCHiLoss(0.2, num_hard=0)(q, key, queue)[0].item() == pytest.approx(ref, rel=1e-12)
    # Hard synthetic negatives only add to the denominator, so mixing raises the loss.
    assert MoCHiLoss(0.2, num_hard=10, num_mixed=5, num_query_mixed=5)(q, key, queue)[0].item() > ref


def test_analytic_value() -> None:
    t, k = 0.2, 7
    e0 = torch.eye(8, dtype=torch.float64)[:1]
    queue = torch.eye(8, dtype=torch.float64)[1:]  # 7 unit vectors orthogonal to e_0
    loss, logs = MoCHiLoss(t)(e0, e0, queue, mix=False)
    assert loss.item() == pytest.approx(math.log(1 + k * math.exp(-1 / t)), rel=1e-12)
    assert logs["pos_sim"].item() == pytest.approx(1.0)


def test_each_query_mixes_only_its_own_hard_negatives() -> None:
    """4 queries in orthogonal 4-dim blocks; block i holds query i's 5 hard negatives (others score 0)."""
    g = torch.Generator().manual_seed(0)
    b, m, per = 4, 4, 5
    q = torch.zeros(b, b * m)
    queue = torch.zeros(b * per, b * m)
    for i in range(b):
        q[i, i * m : (i + 1) * m] = torch.rand(m, generator=g) + 0.5
        queue[i * per : (i + 1) * per, i * m : (i + 1) * m] = torch.rand(per, m, generator=g) + 0.1
    queue = queue[torch.randperm(b * per, generator=g)]  # the hard sets are not the first rows
    mixed, query_mixed = MoCHiLoss(num_hard=per, num_mixed=64, num_query_mixed=64).synthetic_negatives(
        q, queue, generator=g
    )
    for h in (mixed, query_mixed):
        torch.testing.assert_close(h.norm(dim=-1), torch.ones(h.shape[:2]))
        assert not h.requires_grad
        for i in range(b):
            outside = torch.cat([h[i, :, : i * m], h[i, :, (i + 1) * m :]], dim=1)
            assert outside.abs().max().item() == 0.0  # zero component outside query i's own block
            assert h[i, :, i * m : (i + 1) * m].norm(dim=-1).min().item() == pytest.approx(1.0)


@pytest.mark.parametrize("w", [0.5, 0.2])
def test_query_weight_below_half(w: float) -> None:
    """q = e_0 orthogonal to the queue: h' = (beta e_0 + (1 - beta) n)/norm, so h'_0 / |h'_rest| = beta/(1-beta)."""
    q = torch.eye(10)[:3]
    queue = F.normalize(
        torch.randn(40, 10, generator=torch.Generator().manual_seed(2)) * (torch.arange(10) >= 3), dim=1
    )
    _, query_mixed = MoCHiLoss(num_hard=8, num_mixed=0, num_query_mixed=500, max_query_weight=w).synthetic_negatives(
        q, queue, generator=torch.Generator().manual_seed(3)
    )
    on_q = torch.einsum("bd,bsd->bs", q, query_mixed)
    rest = (query_mixed - on_q[..., None] * q[:, None]).norm(dim=-1)
    ratio = on_q / rest  # = beta / (1 - beta)
    assert (on_q > 0).all() and (on_q < rest).all()  # closer to its negative than to q
    assert ratio.max().item() < w / (1 - w) + 1e-6 and ratio.max().item() > 0.8 * w / (1 - w)


def test_gradients_reach_q_only() -> None:
    q, key, queue = inputs(4, 8, 16, seed=9)
    key.requires_grad_(True)
    queue.requires_grad_(True)
    loss, _ = MoCHiLoss(0.2, num_hard=6, num_mixed=4, num_query_mixed=4)(q, key, queue)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert key.grad is None and queue.grad is None


def test_global_rng_and_validation() -> None:
    q, key, queue = inputs(4, 8, 16, seed=4)
    torch.manual_seed(5)
    a = MoCHiLoss(num_hard=6, num_mixed=4, num_query_mixed=4)(q, key, queue)[0]
    torch.manual_seed(5)
    assert a.item() == MoCHiLoss(num_hard=6, num_mixed=4, num_query_mixed=4)(q, key, queue)[0].item()
    for bad in ({"temperature": 0.0}, {"max_query_weight": 0.6}, {"num_mixed": -1}):
        with pytest.raises(ValueError):
            MoCHiLoss(**bad)


def test_excluded_queue_entries_are_neither_negatives_nor_mixed() -> None:
    # Row 0 of the queue is an older key of query 0 itself: excluded, the loss must equal a run on
    # a queue without that row (same hard sets, same draws from the same generator).
    g = torch.Generator().manual_seed(5)
    q, k, queue = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(12, 8, generator=g)
    queue[0] = q[0] * 3.0  # the hardest "negative" of query 0
    exclude = torch.zeros(3, 12, dtype=torch.bool)
    exclude[0, 0] = True
    loss_fn = MoCHiLoss(0.2, num_hard=4, num_mixed=6, num_query_mixed=6)
    masked, _ = loss_fn(q, k, queue, exclude=exclude, generator=torch.Generator().manual_seed(1))
    row0, _ = loss_fn(q[:1], k[:1], queue[1:], generator=torch.Generator().manual_seed(1))
    full, _ = loss_fn(q[:1], k[:1], queue, generator=torch.Generator().manual_seed(1))
    # Query 0's term alone: compare through a 1-query batch with the same exclusion.
    single, _ = loss_fn(q[:1], k[:1], queue, exclude=exclude[:1], generator=torch.Generator().manual_seed(1))
    assert single.item() == pytest.approx(row0.item(), rel=1e-6)
    assert full.item() > single.item()  # the excluded near-duplicate was the dominant negative
    assert torch.isfinite(masked)
