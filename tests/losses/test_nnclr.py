"""NNCLRLoss: a plain computation of Eq. 1 (solo-learn's form), lightly 1.6's NTXentLoss for the
``same_view_negatives`` form, an analytic value. The support set's nearest neighbour against
lightly's NNMemoryBankModule is in tests/heads/test_nnclr_head.py; 1 vs 2 processes in
tests/test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss as LightlyNTXentLoss

from ssl_toolkit.losses import NNCLRLoss


def plain_nnclr(neighbours: torch.Tensor, predictions: torch.Tensor, t: float) -> torch.Tensor:
    """Eq. 1 as a loop over anchors i: -log exp(nn_i . p_i / t) / sum_k exp(nn_i . p_k / t), unit vectors."""
    nn_ = [x / x.norm() for x in neighbours.detach()]
    p = [x / x.norm() for x in predictions]
    total = 0.0
    for i in range(len(nn_)):
        scores = torch.stack([nn_[i] @ p[k] / t for k in range(len(p))])
        total = total - (scores[i] - torch.logsumexp(scores, dim=0))
    return total / len(nn_)


@pytest.mark.parametrize(("n", "d", "t"), [(4, 3, 0.1), (9, 8, 0.2), (16, 5, 0.5)])
def test_equals_the_plain_formula_value_and_gradient(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n)
    neighbours = torch.randn(n, d, generator=g, dtype=torch.float64)
    predictions = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)
    ours = NNCLRLoss(temperature=t)(neighbours, predictions)
    plain = plain_nnclr(neighbours, predictions, t)
    torch.testing.assert_close(ours.double(), plain, rtol=1e-5, atol=1e-6)
    (mine,), (other,) = torch.autograd.grad(ours, predictions), torch.autograd.grad(plain, predictions)
    torch.testing.assert_close(mine.double(), other, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("n", "d", "t"), [(4, 3, 0.1), (12, 8, 0.2), (32, 16, 0.5)])
def test_same_view_negatives_equals_lightlys_ntxent(n: int, d: int, t: float) -> None:
    """lightly's NNCLR: NTXentLoss(NN(z_a), p_b), the neighbours detached."""
    g = torch.Generator().manual_seed(n + 1)
    neighbours, predictions = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    ours_p, theirs_p = predictions.clone().requires_grad_(True), predictions.clone().requires_grad_(True)
    ours = NNCLRLoss(temperature=t, same_view_negatives=True)(neighbours, ours_p)
    theirs = LightlyNTXentLoss(temperature=t)(neighbours, theirs_p)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward(), theirs.backward()
    torch.testing.assert_close(ours_p.grad, theirs_p.grad, rtol=1e-4, atol=1e-7)


def test_analytic_value_on_orthonormal_vectors() -> None:
    """neighbour i = prediction i = e_i: logits 1/t on the diagonal and 0 elsewhere, so
    L = -1/t + log(exp(1/t) + N - 1)."""
    n, t = 5, 0.2
    e = torch.eye(n)
    expected = -1 / t + math.log(math.exp(1 / t) + n - 1)
    torch.testing.assert_close(NNCLRLoss(temperature=t)(e, e), torch.tensor(expected))


def test_no_gradient_reaches_the_neighbours() -> None:
    neighbours = torch.randn(6, 4, requires_grad=True)
    predictions = torch.randn(6, 4, requires_grad=True)
    NNCLRLoss()(neighbours, F.normalize(predictions, dim=1)).backward()
    assert neighbours.grad is None and predictions.grad is not None


def test_bad_temperature_names_the_keyword() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NNCLRLoss(temperature=0.0)
