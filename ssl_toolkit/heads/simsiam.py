"""SimSiam head: projector + predictor, stop-gradient, no momentum encoder, no negatives."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.simsiam import SimSiamLoss


class SimSiamHead(SSLHead):
    """SimSiam (Chen and He, CVPR 2021, arXiv 2011.10566): projector g, predictor h, stop-gradient.

    z = g(f(x)), p = h(z); the loss (Eq. 4, ``SimSiamLoss``) is the mean over ordered pairs of views
    of the negative cosine of a prediction to the other view's stop-gradient projection::

        L = mean_{i != j} D(p_i, sg(z_j)),   D(p, z) = -(p / |p|) . (z / |z|)

    which for two views is the paper's D(p1, z2) / 2 + D(p2, z1) / 2. No momentum encoder and no
    negatives: the stop-gradient alone prevents collapse (Sec. 4.1). Defaults are the paper's and
    solo-learn's ImageNet-100 ones: projector 3 Linear layers in -> 2048 -> 2048 -> 2048, BN on
    every layer (the output BN without affine parameters) and ReLU on the hidden ones; predictor
    2048 -> 512 -> 2048 with BN + ReLU on the hidden layer only (Sec. 3, "Projection MLP",
    "Prediction MLP"). Departures (the predictor's lr is scheduled here; the paper keeps it fixed):
    ``docs/methods/simsiam.md``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers: projector widths and Linear layers.
        pred_hidden_dim: predictor bottleneck width (its output is ``out_dim``).
        batch_norm: BatchNorm1d after every hidden Linear of projector and predictor.
        last_norm: norm after the projector's output Linear (``ssl_toolkit.heads.mlp.build_mlp``;
            the paper's: ``bn_noaffine``).

    Raises:
        ValueError: a width or ``num_layers`` below 1, or an unknown ``last_norm``.

    Shapes:
        views.feats: V >= 2 tensors (B, F). Returns a scalar loss in [-1, 1]; logs ``z_std``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        num_layers: int = 3,
        pred_hidden_dim: int = 512,
        batch_norm: bool = True,
        last_norm: str = "bn_noaffine",
    ) -> None:
        super().__init__()
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm)
        self.predictor = build_mlp(out_dim, pred_hidden_dim, out_dim, 2, batch_norm)
        self.loss = SimSiamLoss()

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, out_dim): the projection z, which evaluation and RankMe see."""
        return self.projector(feats)

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        num = len(views.feats)
        if num < 2:
            raise ValueError(f"SimSiamHead needs at least 2 views, got {num}")
        z = self.projector(torch.cat(views.feats))
        p, z = self.predictor(z).chunk(num), z.chunk(num)
        loss = torch.stack([self.loss(p[i], z[j]) for i in range(num) for j in range(num) if i != j]).mean()
        return HeadOutput(loss=loss, logs={"z_std": embedding_spread(z[0])})
