"""Positive-vs-negative score separation: pooled ROC-AUC (Mann-Whitney) and the rank of the positive.

Distributed use (each process holds the query rows ``q`` of its images and the gathered keys)::

    scores = F.normalize(q, dim=1) @ F.normalize(gather_no_grad(k), dim=1).T  # (n, N)
    pos, neg = split_scores(scores, positive=rank * n + arange(n))
    twice_u = mann_whitney_count(gather_no_grad(pos), neg)       # all positives x local negatives
    twice_u, n_neg, rank_sum = all_reduce_sum([twice_u, neg.new_tensor(neg.numel()), positive_ranks(...).sum()])

The counts are integers, so the AUC is bit-identical to the 1-process value.
"""

from __future__ import annotations

import torch
from torch import Tensor


def split_scores(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and pooled negative scores of a (n, M) score matrix.

    Row i's positive is column ``positive[i]``; every other entry of row i is a negative of query i.
    Negatives of all rows are pooled (MW loss, Sheikholeslami et al. 2025, Sec. 4.2: one pool).

    Args:
        scores: (n, M) similarities, e.g. cosines of view-1 embeddings against view-2 embeddings.
        positive: (n,) long column index of each row's positive.

    Returns:
        pos (n,) and neg (n * (M - 1),), float64.
    """
    if scores.ndim != 2 or positive.shape != (scores.shape[0],):
        raise ValueError(f"scores (n, M) and positive (n,): got {tuple(scores.shape)}, {tuple(positive.shape)}")
    s = scores.detach().double()
    col = positive.to(s.device).long()
    mask = torch.zeros_like(s, dtype=torch.bool)
    mask[torch.arange(s.shape[0], device=s.device), col] = True
    return s[mask], s[~mask]


@torch.no_grad()
def mann_whitney_count(pos: Tensor, neg: Tensor) -> Tensor:
    """2U, twice the Mann-Whitney statistic: 2 * Sum_i Sum_j [1(p_i > n_j) + 1/2 1(p_i = n_j)].

    An int64 scalar, exact, and additive over any split of ``pos`` or of ``neg`` (sum it over
    processes). Costs O((P + M) log M) by sorting the negatives.

    Args:
        pos: (P,) positive scores; neg: (M,) negative scores.
    """
    neg_sorted = neg.detach().double().flatten().sort().values
    p = pos.detach().double().flatten().to(neg_sorted.device)
    below = torch.searchsorted(neg_sorted, p, right=False)  # negatives strictly below each positive
    at_most = torch.searchsorted(neg_sorted, p, right=True)  # ... below or tied
    return (below + at_most).sum()


def auc_from_count(twice_u: Tensor | int, num_pos: int, num_neg: int) -> float:
    """AUC = U / (P M) from :func:`mann_whitney_count`'s 2U."""
    if num_pos < 1 or num_neg < 1:
        raise ValueError(f"the AUC needs >= 1 positive and >= 1 negative, got {num_pos}, {num_neg}")
    return float(twice_u) / (2.0 * num_pos * num_neg)


def roc_auc(pos: Tensor, neg: Tensor) -> float:
    """ROC-AUC of positives against negatives, pooled: U / (P M) (Mann-Whitney; ties count 1/2).

    The probability that a random positive scores above a random negative: 1.0 when every
    positive beats every negative, 0.5 for identical distributions (MW loss paper, Sec. 4.2, writes
    U with a strict indicator; ties counted 1/2 is the standard ROC-AUC and differs only on ties).

    Args:
        pos: (P,) positive scores; neg: (M,) negative scores (any shapes; flattened).
    """
    return auc_from_count(mann_whitney_count(pos, neg), pos.numel(), neg.numel())


@torch.no_grad()
def positive_ranks(scores: Tensor, positive: Tensor) -> Tensor:
    """Rank of each row's positive among the row's scores: 1 + #(neg > pos) + 1/2 #(neg = pos).

    1 is best; a row's ranks lie in [1, M]. Mean them (sum and count over processes) for the
    "mean rank of the positive".

    Args:
        scores: (n, M); positive: (n,) long column of each row's positive.

    Returns:
        (n,) float64 ranks (half-integers on ties).
    """
    s = scores.detach().double()
    rows = torch.arange(s.shape[0], device=s.device)
    p = s[rows, positive.to(s.device).long()][:, None]  # (n, 1)
    above = (s > p).sum(dim=1)
    ties = (s == p).sum(dim=1) - 1  # the positive ties with itself
    return 1.0 + above.double() + 0.5 * ties.double()
