"""Representation metrics as pure functions: RankMe, weighted k-NN, top-k accuracy, alignment,
uniformity, tolerance."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """Effective rank of an embedding matrix (Garrido et al., ICML 2023, Eq. 1-2).

    RankMe(Z) = exp(-sum_k p_k log p_k), p_k = sigma_k(Z) / ||sigma(Z)||_1 + eps, with sigma_k the
    singular values of the *raw* N x D matrix (no centering, no squaring). Computed in float64.
    It lies in [1, min(N, D)]; compare it only between runs of the same method.

    Args:
        z: (N, D) embeddings; use about 25,600 randomly drawn rows (the paper's N).
        eps: 1e-7 for float32 embeddings, as in the paper.
    """
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"z: expected a non-empty (N, D) matrix, got {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.detach().double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    query_feats: Tensor,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> Tensor:
    """Class votes of a cosine-similarity k-NN weighted by exp(s / temperature) (Wu et al., 2018, Eq. 4).

    The bank is scored chunk by chunk of queries, so memory stays at chunk_size x N.

    Args:
        train_feats: (N, D) bank features (normalized here).
        train_labels: (N,) int labels in [0, C).
        query_feats: (Q, D) features to classify.
        k: neighbours; min(k, N) are used when the bank is smaller.
        temperature: weight sharpness.
        num_classes: C (default: max label + 1).

    Returns:
        (Q, C) float votes; argmax is the prediction.
    """
    if train_feats.shape[0] != train_labels.shape[0]:
        raise ValueError(f"train_labels: {train_labels.shape[0]} labels for {train_feats.shape[0]} features")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k and temperature must be positive, got k={k}, temperature={temperature}")
    bank = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.long().to(bank.device)
    classes = num_classes or int(labels.max()) + 1
    k = min(k, bank.shape[0])
    out = []
    for chunk in F.normalize(query_feats.float(), dim=1).split(chunk_size):
        sim, idx = (chunk.to(bank.device) @ bank.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(chunk.shape[0], classes, device=bank.device)
        out.append(votes.scatter_add_(1, labels[idx], (sim / temperature).exp()))
    return torch.cat(out) if out else torch.zeros(0, classes)


def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    query_feats: Tensor,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> Tensor:
    """Predicted labels (Q,) of the weighted k-NN in :func:`knn_scores`; ties go to the lower class."""
    return knn_scores(train_feats, train_labels, query_feats, k, temperature, num_classes).argmax(dim=1)


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``min(k, C)`` highest scores (torchmetrics' micro
    top-k accuracy). For k = 1 the prediction is the argmax, so ties go to the lower class exactly
    as in :func:`knn_classify`. The one top-k used by the online callbacks and the offline tools.

    Args:
        scores: (Q, C) class scores (k-NN votes or logits).
        labels: (Q,) int labels in [0, C).
        k: 1 for top-1, 5 for top-5.

    Raises:
        ValueError: ``k < 1`` or a shape mismatch.
    """
    if k < 1 or scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"topk_accuracy: k={k}, scores {tuple(scores.shape)}, labels {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        return float("nan")
    return float(multiclass_accuracy(scores.float(), labels.long().to(scores.device), num_classes=scores.shape[1],
                                     top_k=min(k, scores.shape[1]), average="micro"))  # fmt: skip


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola (ICML 2020), l_align = mean ||f(x) - f(y)||^alpha over positive pairs; lower is better.

    Args:
        x, y: (N, D) features of the two views of N images (normalized here).
    """
    x, y = F.normalize(x.float(), dim=1), F.normalize(y.float(), dim=1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """Wang & Isola (ICML 2020), l_uniform = log mean_{i<j} exp(-t ||f(x_i) - f(x_j)||^2); lower is better.

    Args:
        x: (N, D) features, N >= 2 (normalized here).
    """
    x = F.normalize(x.float(), dim=1)
    return float(torch.pdist(x).pow(2).mul(-t).exp().mean().log())


class ToleranceStatistics(NamedTuple):
    """Per-class sums (float64, all-reducible) of the normalized features x^ = x / ||x||."""

    sums: Tensor  # (C, D): Sum_{i in c} x^_i
    counts: Tensor  # (C,): n_c
    sq_norms: Tensor  # (C,): Sum_{i in c} ||x^_i||^2 (1 up to rounding; kept for exactness)


@torch.no_grad()
def tolerance_statistics(x: Tensor, labels: Tensor, num_classes: int) -> ToleranceStatistics:
    """Sufficient statistics of :func:`tolerance` for ``x`` (N, D) with ``labels`` (N,) in [0, C)."""
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x (N, D) and labels (N,): got {tuple(x.shape)}, {tuple(labels.shape)}")
    xn = F.normalize(x.detach().double(), dim=1)
    idx = labels.to(xn.device).long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise ValueError(f"labels: must lie in [0, {num_classes}), got [{int(idx.min())}, {int(idx.max())}]")
    sums = xn.new_zeros(num_classes, xn.shape[1]).index_add_(0, idx, xn)
    counts = xn.new_zeros(num_classes).index_add_(0, idx, torch.ones_like(xn[:, 0]))
    sq = xn.new_zeros(num_classes).index_add_(0, idx, xn.pow(2).sum(dim=1))
    return ToleranceStatistics(sums, counts, sq)


def tolerance_from_statistics(stats: ToleranceStatistics) -> float:
    """Mean cosine over same-class pairs i != j from (summed) ``ToleranceStatistics``.

    Sum over same-class pairs of x^_i . x^_j = Sum_c (||Sum_{i in c} x^_i||^2 - Sum_{i in c} ||x^_i||^2),
    divided by Sum_c n_c (n_c - 1).
    """
    pairs = float((stats.counts * (stats.counts - 1)).sum())
    if pairs <= 0:
        raise ValueError("tolerance: no class has 2 samples")
    return float((stats.sums.pow(2).sum(dim=1) - stats.sq_norms).sum()) / pairs


def tolerance(x: Tensor, labels: Tensor, num_classes: int | None = None) -> float:
    """Wang & Liu (CVPR 2021, Eq. 11): mean cosine similarity of same-class pairs; a diagnostic.

    Eq. 11 reads T = E_{x,y}[f(x)^T f(y) I(l(x) = l(y))]; taken literally over all pairs it is
    scaled by P(same class) ~ 1/C, which cannot give the paper's CIFAR-100 values (0.27-0.34), so
    this is the paper's wording, "the mean similarities of samples [that] belong to the same class":
    the mean over ordered pairs i != j with equal labels. Higher = more tolerant to semantically
    similar samples; a total collapse maximises it (1), so read it with uniformity.

    Args:
        x: (N, D) features (normalized here); labels: (N,) ints in [0, C).
        num_classes: C (default: max label + 1).
    """
    classes = num_classes or int(labels.max()) + 1
    return tolerance_from_statistics(tolerance_statistics(x, labels, classes))
