"""Heads with a momentum key encoder: a projector and its EMA copy (MoCo v2), plus a predictor (BYOL, MoCo v3)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ssl_toolkit.ema import cosine_momentum, ema_update
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread


class MomentumProjectorHead(SSLHead):
    """Base of the heads whose keys / targets come from momentum copies of the online network.

    ``SSLModule`` keeps the momentum backbone f_m (``uses_teacher``); this head keeps the projector g
    and its momentum copy g_m (no gradient). After every optimizer step both copies move as
    theta_m <- m theta_m + (1 - m) theta, m from ``base_momentum`` to ``final_momentum`` on BYOL's
    cosine schedule (``ssl_toolkit.ema.cosine_momentum``; MoCo v3's ``--moco-m-cos``).
    ``final_momentum = base_momentum`` gives MoCo's constant momentum. Subclasses add the loss.

    Args:
        projector: g, (B, F) -> (B, D); ``embed`` returns its output.
        base_momentum, final_momentum: m at the first and the last optimizer step, in [0, 1].

    Raises:
        ValueError: a momentum outside [0, 1].
    """

    uses_teacher = True

    def __init__(self, projector: nn.Module, base_momentum: float, final_momentum: float) -> None:
        super().__init__()
        for name, m in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {m}")
        self.projector = projector
        self.momentum_projector = copy.deepcopy(projector).requires_grad_(False)
        self.base_momentum, self.final_momentum = base_momentum, final_momentum

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, D): the online projection g(f(x)), which evaluation and RankMe see."""
        return self.projector(feats)

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(self.base_momentum, self.final_momentum, step, total_steps)

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.momentum_projector, self.projector, self.teacher_momentum(step, total_steps))


class MomentumPredictorHead(MomentumProjectorHead):
    """A momentum projector head with a predictor h on the online side (BYOL, MoCo v3).

    Online prediction p = h(g(f(x))) of every view j, target z' = g_m(f_m(x')) of every global view
    i (``views.teacher``); the loss sums ``loss(p_j, z'_i)`` over the pairs with j != i::

        L = sum_{i global} sum_{j != i} loss(p_j, sg(z'_i))

    which for two views is the symmetric loss(p_1, z'_2) + loss(p_2, z'_1). The loss is the one
    thing BYOL (normalized MSE) and MoCo v3 (in-batch InfoNCE) differ in here.

    Args:
        projector, base_momentum, final_momentum: as ``MomentumProjectorHead``.
        predictor: h, (B, D) -> (B, D).
        loss: one direction, ``loss(p, target) -> scalar`` with p and target (B, D).

    Raises:
        ValueError: as ``MomentumProjectorHead``; at forward, fewer than 2 views or no teacher features.

    Shapes:
        views.feats: V >= 2 tensors (B, F), global views first; views.teacher: the momentum
        backbone's features of the global views (>= 1, each (B, F)). Returns a scalar loss; logs
        ``z_std`` of the first view's projection.
    """

    def __init__(
        self, projector: nn.Module, predictor: nn.Module, loss: nn.Module, base_momentum: float, final_momentum: float
    ) -> None:
        super().__init__(projector, base_momentum, final_momentum)
        self.predictor = predictor
        self.loss = loss

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2 or not views.teacher:
            raise ValueError(
                f"{type(self).__name__} needs >= 2 views and the momentum backbone's features (views.teacher), "
                f"got {len(views.feats)} views"
            )
        z = self.projector(torch.cat(views.feats))
        p = self.predictor(z).chunk(len(views.feats))
        with torch.no_grad():
            targets = self.momentum_projector(torch.cat(views.teacher)).chunk(len(views.teacher))
        loss = torch.stack([self.loss(p[j], targets[i]) for i in range(len(targets)) for j in range(len(p)) if j != i])
        return HeadOutput(loss=loss.sum(), logs={"z_std": embedding_spread(z.chunk(len(views.feats))[0])})
