"""Feature Transformation: the two transforms' geometry and the loss against a per-query loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses.feature_transform import FeatureTransformLoss, extrapolate_pair, interpolate_queue
from ssl_toolkit.losses.queue_infonce import QueueInfoNCELoss


@pytest.mark.parametrize("lam", [1.0, 1.3, 2.0])
def test_extrapolation_moves_the_pair_apart_along_its_difference(lam: float) -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    q_hat, k_hat = extrapolate_pair(q, k, lam)
    torch.testing.assert_close(q_hat - k_hat, (2 * lam - 1) * (q - k))  # same direction, stretched
    torch.testing.assert_close(q_hat + k_hat, q + k)  # about the same midpoint
    assert ((q_hat - k_hat).norm(dim=1) >= (q - k).norm(dim=1) - 1e-12).all()
    # a harder positive: the similarity drops by lam (lam - 1) |q - k|^2 >= 0 (unit q, k)
    drop = (q * k).sum(1) - (q_hat * k_hat).sum(1)
    torch.testing.assert_close(drop, lam * (lam - 1) * (q - k).pow(2).sum(1))
    assert (drop >= -1e-12).all()


def test_interpolation_mixes_each_row_with_its_permuted_partner() -> None:
    g = torch.Generator().manual_seed(1)
    queue, perm, mu = torch.randn(7, 3, generator=g), torch.randperm(7, generator=g), 0.3
    mixed = interpolate_queue(queue, mu, perm)
    for j in range(7):
        torch.testing.assert_close(mixed[j], mu * queue[j] + (1 - mu) * queue[int(perm[j])])
    torch.testing.assert_close(interpolate_queue(queue, 1.0, perm), queue)


def plain_ft_loss(q, k, queue, lam, mu, perm, t):  # noqa: ANN001, ANN202
    """Per query: unit rows, transforms as in the authors' RGBMoCo_dropmix_norm, then -log softmax_0."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    negs = [mu * queue[j] + (1 - mu) * queue[int(perm[j])] for j in range(queue.shape[0])]
    total = 0.0
    for i in range(q.shape[0]):
        qi, ki = lam * q[i] + (1 - lam) * k[i], lam * k[i] + (1 - lam) * q[i]
        pos = math.exp(float(qi @ ki) / t)
        neg = sum(math.exp(float(qi @ n) / t) for n in negs)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_loss_equals_a_per_query_loop() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, queue = (torch.randn(s, 6, generator=g, dtype=torch.float64) for s in (5, 5, 11))
    perm = torch.randperm(11, generator=g)
    loss, logs = FeatureTransformLoss(0.2)(q, k, queue, lam=1.4, mu=0.35, perm=perm)
    assert float(loss) == pytest.approx(plain_ft_loss(q, k, queue, 1.4, 0.35, perm, 0.2), rel=1e-10)
    assert set(logs) == {"pos_sim", "neg_sim"}


def test_no_draws_is_moco_v2_exactly_and_exclusion_follows_both_sources() -> None:
    g = torch.Generator().manual_seed(3)
    q, k, queue = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(9, 8, generator=g)
    exclude = torch.zeros(4, 9, dtype=torch.bool)
    exclude[0, 2] = True
    ft, _ = FeatureTransformLoss(0.2)(q, k, queue, exclude=exclude)
    moco, _ = QueueInfoNCELoss(0.2)(q, k, queue, exclude=exclude)
    assert torch.equal(ft, moco)
    # With mixing, queue' row j is excluded for query 0 when j or perm[j] is its own key (row 2).
    perm = torch.tensor([2, 0, 1, 3, 4, 5, 6, 7, 8])  # row 0 mixes in row 2
    loss, _ = FeatureTransformLoss(0.2)(q, k, queue, mu=0.5, perm=perm, exclude=exclude)
    keep = torch.ones(9, dtype=torch.bool)
    keep[[0, 2]] = False
    mixed = 0.5 * F.normalize(queue, dim=1) + 0.5 * F.normalize(queue, dim=1)[perm]
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits0 = torch.cat([(qn[0] * kn[0]).sum()[None], qn[0] @ mixed[keep].T]) / 0.2
    rest = torch.cat([(qn[1:] * kn[1:]).sum(1, keepdim=True), qn[1:] @ mixed.T], 1) / 0.2
    expected = (-F.log_softmax(logits0, 0)[0] - F.log_softmax(rest, 1)[:, 0].sum()) / 4
    torch.testing.assert_close(loss, expected)


def test_gradient_reaches_the_query_only() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 5, generator=g, requires_grad=True)
    k = torch.randn(3, 5, generator=g, requires_grad=True)
    queue = torch.randn(6, 5, generator=g, requires_grad=True)
    loss, _ = FeatureTransformLoss(0.2)(q, k, queue, lam=1.5, mu=0.4, perm=torch.randperm(6, generator=g))
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None
    with pytest.raises(ValueError, match="mu and perm"):
        FeatureTransformLoss(0.2)(q, k, queue, mu=0.5)
