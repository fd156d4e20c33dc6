"""Representation metrics as pure functions: RankMe, weighted k-NN, top-k accuracy, alignment, uniformity."""

from __future__ import annotations

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
