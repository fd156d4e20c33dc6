"""MoCo v3 head: projector + predictor, momentum key projector, symmetric in-batch InfoNCE."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from ssl_toolkit.ema import cosine_momentum, ema_update
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.mocov3 import MoCoV3Loss


class MoCoV3Head(SSLHead):
    """MoCo v3 (Chen, Xie and He, ICCV 2021, arXiv 2104.02057, Algorithm 1): query q = h(g(f(x)))
    through projector g and predictor h; key k = g_m(f_m(x')) from momentum copies, no queue.

    ``SSLModule`` keeps the momentum backbone f_m (``uses_teacher``); this head keeps g_m. Both move
    after every optimizer step as theta_m <- m theta_m + (1 - m) theta, m from ``base_momentum`` to
    ``final_momentum`` on a half-cycle cosine (the authors' ``--moco-m-cos``). The loss sums
    ``MoCoV3Loss`` (2t-scaled InfoNCE against the keys of the global batch) over each global view
    i's keys and the queries of every other view j::

        L = sum_{i global} sum_{j != i} ctr(q_j, k_i)

    which for two views is the authors' ctr(q1, k2) + ctr(q2, k1). Defaults are solo-learn's
    ImageNet-100 ResNet-18 setting, which is the authors' ResNet head: projector in -> 4096 -> 256
    (2 layers; the authors' ViT head: 3), predictor 256 -> 4096 -> 256, no bias, BN + ReLU after
    every hidden layer, BN without affine parameters after the projector's output (the ViT
    predictor has one too: ``predictor_last_norm: bn_noaffine``), t = 0.2 (the authors' ResNet-50:
    1.0), momentum 0.99 -> 1.0. Departures: ``docs/methods/mocov3.md``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers: projector widths and Linear layers (ResNet 2, ViT 3).
        pred_hidden_dim: predictor hidden width (2 layers, output ``out_dim``).
        batch_norm: BatchNorm1d after every hidden Linear of projector and predictor.
        last_norm, predictor_last_norm: norm after the projector's / predictor's output Linear
            (``ssl_toolkit.heads.mlp.build_mlp``).
        temperature: t > 0.
        base_momentum, final_momentum: m at the first and the last optimizer step, in [0, 1].

    Raises:
        ValueError: a width or ``num_layers`` below 1, an unknown norm, ``temperature <= 0``, or a
            momentum outside [0, 1].

    Shapes:
        views.feats: V >= 2 tensors (B, F), global views first; views.teacher: the momentum
        backbone's features of the global views. Returns a scalar loss; logs ``z_std``.
    """

    uses_teacher = True

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        num_layers: int = 2,
        pred_hidden_dim: int = 4096,
        batch_norm: bool = True,
        last_norm: str = "bn_noaffine",
        predictor_last_norm: str = "none",
        temperature: float = 0.2,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__()
        for name, m in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {m}")
        self.loss = MoCoV3Loss(temperature)
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias=False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.predictor = build_mlp(out_dim, pred_hidden_dim, out_dim, 2, batch_norm, predictor_last_norm, bias=False)
        self.base_momentum, self.final_momentum = base_momentum, final_momentum

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, out_dim): the projection g(f(x)), which evaluation and RankMe see."""
        return self.projector(feats)

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(self.base_momentum, self.final_momentum, step, total_steps)

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.momentum_projector, self.projector, self.teacher_momentum(step, total_steps))

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2 or not views.teacher:
            raise ValueError(f"MoCoV3Head needs >= 2 views and the momentum backbone features, got {len(views.feats)}")
        z = self.projector(torch.cat(views.feats))
        q = self.predictor(z).chunk(len(views.feats))
        with torch.no_grad():
            k = self.momentum_projector(torch.cat(views.teacher)).chunk(len(views.teacher))
        loss = torch.stack([self.loss(q[j], k[i]) for i in range(len(k)) for j in range(len(q)) if j != i])
        return HeadOutput(loss=loss.sum(), logs={"z_std": embedding_spread(z.chunk(len(views.feats))[0])})
