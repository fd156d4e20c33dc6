"""SimCLRHead: a multi-view loss gets all V projections in one call; a two-view loss every pair."""

from __future__ import annotations

import torch

from ssl_toolkit.heads import BatchInfo, SimCLRHead, Views
from ssl_toolkit.losses import MVDHELLoss, NTXentLoss


def _batch(n: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(n), index=torch.arange(n), step=0, epoch=0)


def test_multi_view_loss_gets_all_views_at_once() -> None:
    torch.manual_seed(0)
    head = SimCLRHead(in_dim=12, hidden_dim=16, out_dim=8, batch_norm=False, last_norm="none", loss=MVDHELLoss(0.5))
    feats = [torch.randn(6, 12) for _ in range(4)]
    out = head(Views(feats), _batch(6))
    z = [head.embed(f) for f in feats]
    torch.testing.assert_close(out.loss, MVDHELLoss(0.5)(z))


def test_two_view_loss_is_averaged_over_pairs() -> None:
    torch.manual_seed(0)
    head = SimCLRHead(in_dim=12, hidden_dim=16, out_dim=8, batch_norm=False, last_norm="none", loss=NTXentLoss(0.5))
    feats = [torch.randn(6, 12) for _ in range(3)]
    z = [head.embed(f) for f in feats]
    expected = (NTXentLoss(0.5)(z[0], z[1]) + NTXentLoss(0.5)(z[0], z[2]) + NTXentLoss(0.5)(z[1], z[2])) / 3
    torch.testing.assert_close(head(Views(feats), _batch(6)).loss, expected)
