"""MoCo's InfoNCE against a queue: the written-out formula, own-key exclusion, MoCHi without mixing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.losses import MoCHiLoss, QueueInfoNCELoss


def per_query(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, keep: list[torch.Tensor], t: float
) -> torch.Tensor:
    """-log exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_{j in keep_i} exp(q_i.n_j/t)), averaged over i."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    terms = []
    for i in range(q.shape[0]):
        pos = torch.exp(q[i] @ k[i] / t)
        terms.append(-torch.log(pos / (pos + torch.exp(queue[keep[i]] @ q[i] / t).sum())))
    return torch.stack(terms).mean()


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    return q, torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(10, 6, generator=g, dtype=torch.float64)


def test_value_gradient_and_exclusion_match_the_formula() -> None:
    q, k, queue = inputs(0)
    exclude = torch.zeros(4, 10, dtype=torch.bool)
    exclude[0, 3] = exclude[2, 7] = exclude[2, 8] = True
    keep = [torch.nonzero(~row).flatten() for row in exclude]
    loss, logs = QueueInfoNCELoss(0.3)(q, k, queue, exclude=exclude)
    ref = per_query(q, k, queue, keep, 0.3)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(loss, q)[0], torch.autograd.grad(ref, q)[0])
    assert set(logs) == {"pos_sim"} and not logs["pos_sim"].requires_grad


def test_mochi_without_mixing_is_the_plain_loss_bit_for_bit() -> None:
    q, k, queue = inputs(1)
    exclude = torch.rand(4, 10, generator=torch.Generator().manual_seed(2)) < 0.3
    plain = QueueInfoNCELoss(0.2)(q, k, queue, exclude=exclude)[0]
    for loss_fn, mix in ((MoCHiLoss(0.2, num_hard=0), True), (MoCHiLoss(0.2, num_hard=5), False)):
        assert torch.equal(loss_fn(q, k, queue, mix=mix, exclude=exclude)[0], plain)


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="temperature"):
        QueueInfoNCELoss(0.0)
