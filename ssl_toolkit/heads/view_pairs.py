"""Heads that embed every view on its own and average a two-view loss over every pair of views."""

from __future__ import annotations

from itertools import combinations

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread


class ViewPairsHead(SSLHead):
    """Base of Barlow Twins and VICReg: z_v = ``embed``(h_v) per view v, each view a separate call
    (BatchNorm statistics per view, as both authors' code), then ``loss(z_a, z_b)`` averaged over
    the V(V-1)/2 pairs of views (two views: the one pair). Subclasses build ``embed``'s network and
    ``self.loss``.

    Raises:
        ValueError: at forward, fewer than 2 views.

    Shapes:
        views.feats: V >= 2 tensors (B, F). Returns a scalar loss; logs ``z_std`` of the first view.
    """

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 views, got {len(views.feats)}")
        z = [self.embed(f) for f in views.feats]
        pairs = list(combinations(range(len(z)), 2))
        loss = sum(self.loss(z[i], z[j]) for i, j in pairs) / len(pairs)
        return HeadOutput(loss=loss, logs={"z_std": embedding_spread(z[0])})
