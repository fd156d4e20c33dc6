"""Barlow Twins and VICReg heads: the loss on the projector's per-view outputs (authors' per-view
BatchNorm), the authors' projector shape, pair averaging, bad arguments."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from torch import nn

from ssl_toolkit.heads import BarlowTwinsHead, BatchInfo, VICRegHead, Views
from ssl_toolkit.losses import BarlowTwinsLoss, VICRegLoss


def info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


@pytest.mark.parametrize("num_views", [2, 3])
def test_barlow_twins_head_is_the_loss_on_each_views_projection(num_views: int) -> None:
    torch.manual_seed(0)
    head = BarlowTwinsHead(in_dim=12, hidden_dim=32, out_dim=16, lambd=0.02, scale_loss=0.1)
    feats = [torch.randn(8, 12) for _ in range(num_views)]
    out = head(Views(feats), info(8))
    z = [head.projector(f) for f in feats]  # one call per view: BN statistics per view
    loss = BarlowTwinsLoss(lambd=0.02, scale_loss=0.1)
    expected = torch.stack([loss(z[i], z[j]) for i, j in combinations(range(num_views), 2)]).mean()
    torch.testing.assert_close(out.loss, expected)
    joint = head.projector(torch.cat(feats)).chunk(num_views)  # what a concatenated call would give
    assert not torch.allclose(loss(joint[0], joint[1]), loss(z[0], z[1]))


def test_vicreg_head_is_the_loss_on_each_views_expansion() -> None:
    torch.manual_seed(1)
    head = VICRegHead(in_dim=12, hidden_dim=32, out_dim=16, invariance_weight=10.0)
    feats = [torch.randn(8, 12) for _ in range(2)]
    out = head(Views(feats), info(8))
    expected = VICRegLoss(invariance_weight=10.0)(head.expander(feats[0]), head.expander(feats[1]))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("cls", [BarlowTwinsHead, VICRegHead])
def test_projector_is_the_authors_three_linear_layers_without_bias(cls: type) -> None:
    head = cls(in_dim=12, hidden_dim=32, out_dim=16)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 32), (32, 32), (32, 16)]
    assert all(m.bias is None for m in linears) and len(norms) == 2
    assert head.embed(torch.randn(4, 12)).shape == (4, 16)


@pytest.mark.parametrize(
    ("cls", "bad"),
    [(BarlowTwinsHead, {"lambd": -1.0}), (BarlowTwinsHead, {"out_dim": 0}), (VICRegHead, {"variance_weight": -1.0}),
     (VICRegHead, {"num_layers": 0})],
)  # fmt: skip
def test_bad_arguments_name_the_keyword(cls: type, bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        cls(in_dim=12, **bad)


@pytest.mark.parametrize("cls", [BarlowTwinsHead, VICRegHead])
def test_one_view_is_refused(cls: type) -> None:
    with pytest.raises(ValueError, match="at least 2 views"):
        cls(in_dim=12, hidden_dim=8, out_dim=8)(Views([torch.randn(4, 12)]), info(4))
