"""metrics_contrastive against plain pairwise counts written here, and known AUC values."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from ssl_toolkit.metrics_contrastive import (
    auc_from_count,
    mann_whitney_count,
    positive_ranks,
    roc_auc,
    split_scores,
)


def plain_auc(pos: list[float], neg: list[float]) -> float:
    """Every (positive, negative) pair: 1 if the positive wins, 1/2 on a tie, over P * M."""
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_the_pairwise_count_with_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    # Rounded to one decimal, so many exact ties between and within the two sets.
    pos = (torch.randn(37, generator=g) + 0.5).mul(10).round().div(10)
    neg = torch.randn(53, generator=g).mul(10).round().div(10)
    assert roc_auc(pos, neg) == pytest.approx(plain_auc(pos.tolist(), neg.tolist()), abs=1e-12)
    # torchmetrics' trapezoidal ROC area treats ties the same way
    scores, target = torch.cat([pos, neg]), torch.cat([torch.ones(37), torch.zeros(53)]).long()
    assert roc_auc(pos, neg) == pytest.approx(float(binary_auroc(scores, target)), abs=1e-6)


def test_auc_separable_identical_reversed() -> None:
    neg = torch.linspace(-1, 0.2, 40)
    pos = torch.linspace(0.3, 1, 11)
    assert roc_auc(pos, neg) == 1.0
    assert roc_auc(neg, pos) == 0.0
    assert roc_auc(neg, neg) == 0.5  # identical sets: every tie counts 1/2
    assert roc_auc(torch.zeros(5), torch.zeros(7)) == 0.5  # all tied
    x = torch.randn(64, generator=torch.Generator().manual_seed(3))
    assert roc_auc(x, x[torch.randperm(64)]) == 0.5


def test_count_is_additive_over_splits_of_either_side() -> None:
    g = torch.Generator().manual_seed(4)
    pos, neg = torch.randn(20, generator=g).round(), torch.randn(30, generator=g).round()
    full = mann_whitney_count(pos, neg)
    assert full.dtype == torch.int64
    assert int(mann_whitney_count(pos[:7], neg) + mann_whitney_count(pos[7:], neg)) == int(full)
    assert int(mann_whitney_count(pos, neg[:11]) + mann_whitney_count(pos, neg[11:])) == int(full)
    assert auc_from_count(full, 20, 30) == roc_auc(pos, neg)
    with pytest.raises(ValueError, match="positive"):
        auc_from_count(0, 0, 3)


def test_split_scores_takes_the_positive_column_and_pools_the_rest() -> None:
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(4, 6, generator=g)
    positive = torch.tensor([2, 3, 4, 5])  # rows 0..3 of a 6-key batch whose first 2 keys are elsewhere
    pos, neg = split_scores(scores, positive)
    assert pos.tolist() == [float(scores[i, positive[i]].double()) for i in range(4)]
    expected = [float(scores[i, j].double()) for i in range(4) for j in range(6) if j != int(positive[i])]
    assert neg.tolist() == expected
    with pytest.raises(ValueError, match="positive"):
        split_scores(scores, positive[:3])


def test_positive_ranks_match_a_loop_with_ties() -> None:
    g = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 4, (9, 7), generator=g).float()
    positive = torch.randint(0, 7, (9,), generator=g)
    ranks = positive_ranks(scores, positive)
    for i in range(9):
        p = float(scores[i, positive[i]])
        others = [float(scores[i, j]) for j in range(7) if j != int(positive[i])]
        assert float(ranks[i]) == 1 + sum(o > p for o in others) + 0.5 * sum(o == p for o in others)
    best = torch.eye(5) + 0.1 * torch.randn(5, 5, generator=g).clamp(-0.5, 0.5)
    assert positive_ranks(best, torch.arange(5)).tolist() == [1.0] * 5
    assert positive_ranks(-torch.eye(5), torch.arange(5)).tolist() == [5.0] * 5
