"""Label-free checkpoint scores for ``ssl-toolkit select --metric``: the table of metrics, how each is
computed from one checkpoint's embeddings, which direction is better, and the rank statistics used
to judge a metric against labelled accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ssl_toolkit.metrics import alignment, rankme, uniformity
from ssl_toolkit.metrics_contrastive import roc_auc, split_scores
from ssl_toolkit.metrics_spectral import alpha_req, default_fit_start, lidar


@dataclass(frozen=True)
class LabelFreeMetric:
    """How a metric ranks checkpoints: ``better`` is "higher", "lower", or "near 1" (|value - 1|).

    alpha-ReQ's "near 1" is this toolkit's reading of the paper's "well-defined intervals" of good
    alpha (bounds not read); it is an assumption to check on a sweep, not the paper's rule."""

    description: str
    better: str
    needs_views: bool


METRICS = {
    "rankme": LabelFreeMetric("RankMe of the backbone features (Garrido et al. 2023)", "higher", False),
    "rankme_proj": LabelFreeMetric("RankMe of the projector embeddings (the paper's choice)", "higher", False),
    "alpha_req": LabelFreeMetric("alpha-ReQ of the backbone features (Agrawal et al. 2022)", "near 1", False),
    "alpha_req_proj": LabelFreeMetric("alpha-ReQ of the projector embeddings", "near 1", False),
    "lidar": LabelFreeMetric("LiDAR of the backbone features (Thilak et al. 2024)", "higher", True),
    "lidar_proj": LabelFreeMetric("LiDAR of the projector embeddings (the paper's choice)", "higher", True),
    "auc": LabelFreeMetric("pooled positive-vs-negative ROC-AUC of 2 views' projector embeddings", "higher", True),
    "alignment": LabelFreeMetric("alignment of 2 views' projector embeddings (Wang & Isola 2020)", "lower", True),
    "uniformity": LabelFreeMetric("uniformity of the projector embeddings (Wang & Isola 2020)", "lower", True),
}


def selection_key(name: str, value: float) -> float:
    """Sort key of ``value`` of metric ``name``: lower is better, NaN last."""
    if math.isnan(value):
        return math.inf
    better = METRICS[name].better
    return -value if better == "higher" else value if better == "lower" else abs(value - 1.0)


@dataclass
class ViewEmbedding:
    """Embeddings of q augmented views of n images: ``feats`` (n, q, F), ``proj`` (n, q, D)."""

    feats: Tensor
    proj: Tensor


@torch.no_grad()
def embed_views(module: nn.Module, loader: DataLoader, num_views: int, seed: int) -> ViewEmbedding:
    """Backbone and projector embeddings of ``num_views`` training-augmentation views of each image.

    ``SSLModule.embed_views`` (views of the first view's size only, so multi-crop's local crops are
    skipped) with one generator on the module's device seeded with ``seed`` for the whole loader,
    so every checkpoint sees the same views when the loader yields the same batches; no global
    generator is touched.

    Args:
        module: an ``SSLModule`` (``embed_views``, ``project``).
        loader: yields ``(uint8 images, labels, index)``; labels are not read.
        num_views: q >= 2.
    """
    if num_views < 2:
        raise ValueError(f"num_views: must be >= 2, got {num_views}")
    generator = torch.Generator(module.device).manual_seed(seed)  # the views are drawn on the module's device
    was_training = module.training
    module.eval()
    feats, projs = [], []
    try:
        for images, _, _ in loader:
            f = module.embed_views(images, num_views, generator)  # (b, q, F)
            feats.append(f)
            projs.append(module.project(f.flatten(0, 1)).view(f.shape[0], num_views, -1))
    finally:
        module.train(was_training)
    if not feats:
        raise ValueError("loader: yielded no batches")
    return ViewEmbedding(torch.cat(feats), torch.cat(projs))


def compute(name: str, feats: Tensor, proj: Tensor, views: ViewEmbedding | None) -> float:
    """Metric ``name`` of one checkpoint.

    Args:
        feats, proj: (N, F) backbone features and (N, D) projector embeddings of un-augmented images.
        views: augmented views of (a subset of) the same images; needed when ``METRICS[name].needs_views``.
    """
    spec = METRICS[name]
    if spec.needs_views and views is None:
        raise ValueError(f"{name}: needs augmented views")
    if name in ("rankme", "rankme_proj"):
        return rankme(feats if name == "rankme" else proj)
    if name in ("alpha_req", "alpha_req_proj"):
        x = feats if name == "alpha_req" else proj
        return alpha_req(x, fit_start=default_fit_start(x.shape[1]))  # the authors' ranks 6..100 when D allows
    assert views is not None
    if name in ("lidar", "lidar_proj"):
        return lidar(views.feats if name == "lidar" else views.proj)
    a, b = views.proj[:, 0], views.proj[:, 1]
    if name == "auc":
        scores = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T  # (n, n): view 1 vs view 2
        return roc_auc(*split_scores(scores, torch.arange(a.shape[0], device=scores.device)))
    return alignment(a, b) if name == "alignment" else uniformity(a)


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks of ``values`` (ascending), tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if either is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman: needs two equal-length lists of >= 2 values, got {len(x)} and {len(y)}")
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan
