"""SimCLR head: projector + a two-view contrastive loss (NT-Xent by default)."""

from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor, nn

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.multi_view import MultiViewLoss
from ssl_toolkit.losses.ntxent import NTXentLoss


class SimCLRHead(SSLHead):
    """SimCLR (Chen et al., 2020, arXiv 2002.05709): z = g(h), loss on pairs of views (Eq. 1).

    The projector g defaults to the official code's (google-research/simclr ``model_util.py``
    ``projection_head``, v1): Linear -> BN -> ReLU -> Linear -> BN, BatchNorm on every layer, the
    output one with a scale and no shift, no Linear bias; ``num_layers=3`` is SimCLR v2 (``tf2/model.py``
    ``ProjectionHead``). solo-learn has no BN and lightly a shifted output BN (``last_norm``). The
    loss is either a two-view loss called as ``loss(z_a, z_b)`` (NT-Xent, DCL, MW, ...), averaged
    over all view pairs when there are more than two views, or a
    :class:`~ssl_toolkit.losses.MultiViewLoss` (MV-InfoNCE, MV-DHEL, GroCo), called once with the
    list of all V projections (global views first, then local crops).

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim: projector hidden width (the official code: F).
        out_dim: projection width D.
        num_layers: Linear layers in the projector (v1: 2, v2: 3).
        batch_norm: BN in the projector's hidden layers.
        last_norm: norm on the projector's output (``build_mlp``; official: ``bn``, scale only).
        bias: bias on Linear layers without a BN after them.
        loss: the contrastive loss module (default ``NTXentLoss(temperature=0.2)``).

    Shapes:
        views.feats: V >= 2 tensors (B, F). Returns HeadOutput with a scalar loss.

    Example:
        >>> head = SimCLRHead(in_dim=512, hidden_dim=2048, out_dim=128)
        >>> batch = BatchInfo(labels=torch.arange(8) % 4, index=torch.arange(8), step=0, epoch=0)
        >>> out = head(Views([torch.randn(8, 512), torch.randn(8, 512)]), batch)
        >>> out.loss.backward()
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_norm: str = "bn",
        bias: bool = True,
        loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias)
        self.loss = loss if loss is not None else NTXentLoss(temperature=0.2)

    def embed(self, feats: Tensor) -> Tensor:
        return self.projector(feats)

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2:
            raise ValueError(f"SimCLRHead needs at least 2 views, got {len(views.feats)}")
        # One projector call for all views (same batch size), then split back per view.
        z = self.projector(torch.cat(views.feats)).chunk(len(views.feats))
        if isinstance(self.loss, MultiViewLoss):
            loss = self.loss(list(z))
        else:
            pairs = list(combinations(range(len(z)), 2))
            loss = torch.stack([self.loss(z[i], z[j]) for i, j in pairs]).mean()
        return HeadOutput(loss=loss, logs={"z_std": embedding_spread(z[0])})
