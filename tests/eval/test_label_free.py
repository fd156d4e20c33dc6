"""eval/label_free.py: metric directions, the metric computations, and Spearman against plain formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.eval.label_free import METRICS, ViewEmbedding, average_ranks, compute, selection_key, spearman
from ssl_toolkit.metrics import alignment, rankme, uniformity
from ssl_toolkit.metrics_contrastive import roc_auc
from ssl_toolkit.metrics_spectral import alpha_req, lidar


def test_spearman_matches_the_textbook_formula_without_ties() -> None:
    x = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0]
    y = [2.0, 7.0, 1.0, 8.0, 2.8, 1.8, 3.0]
    n = len(x)
    d2 = sum((a - b) ** 2 for a, b in zip(average_ranks(x), average_ranks(y)))
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)), rel=1e-12)
    assert spearman(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, [1.0] * n))


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10.0, 20.0, 10.0, 5.0]) == [2.5, 4.0, 2.5, 1.0]


def test_selection_key_follows_each_metrics_direction() -> None:
    assert selection_key("rankme", 5.0) < selection_key("rankme", 3.0)
    assert selection_key("alignment", 0.2) < selection_key("alignment", 0.9)
    assert selection_key("alpha_req", 1.1) < selection_key("alpha_req", 0.7) < selection_key("alpha_req", 1.5)
    assert selection_key("lidar", float("nan")) == math.inf
    assert {m.better for m in METRICS.values()} == {"higher", "lower", "near 1"}


def test_compute_calls_the_metric_functions_on_the_right_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    feats, proj = torch.randn(40, 24, generator=g), torch.randn(40, 6, generator=g)
    views = ViewEmbedding(torch.randn(10, 3, 24, generator=g), torch.randn(10, 3, 6, generator=g))
    assert compute("rankme", feats, proj, None) == rankme(feats)
    assert compute("rankme_proj", feats, proj, None) == rankme(proj)
    assert compute("alpha_req", feats, proj, None) == alpha_req(feats, fit_start=5)
    assert compute("alpha_req_proj", feats, proj, None) == alpha_req(proj, fit_start=0)  # D < 20
    assert compute("lidar", feats, proj, views) == lidar(views.feats)
    assert compute("lidar_proj", feats, proj, views) == lidar(views.proj)
    a, b = views.proj[:, 0], views.proj[:, 1]
    s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    pos = [float(s[i, i]) for i in range(10)]
    neg = [float(s[i, j]) for i in range(10) for j in range(10) if i != j]
    assert compute("auc", feats, proj, views) == pytest.approx(roc_auc(torch.tensor(pos), torch.tensor(neg)))
    assert compute("alignment", feats, proj, views) == alignment(a, b)
    assert compute("uniformity", feats, proj, views) == uniformity(a)
    with pytest.raises(ValueError, match="views"):
        compute("lidar", feats, proj, None)
