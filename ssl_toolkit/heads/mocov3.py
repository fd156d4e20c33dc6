"""MoCo v3 head: projector + predictor, momentum key projector, symmetric in-batch InfoNCE."""

from __future__ import annotations

from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.heads.momentum import MomentumPredictorHead
from ssl_toolkit.losses.mocov3 import MoCoV3Loss


class MoCoV3Head(MomentumPredictorHead):
    """MoCo v3 (Chen, Xie and He, ICCV 2021, arXiv 2104.02057, Algorithm 1): query q = h(g(f(x)))
    through projector g and predictor h; key k = g_m(f_m(x')) from momentum copies, no queue.

    ``SSLModule`` keeps the momentum backbone f_m (``uses_teacher``); this head keeps g_m
    (``MomentumPredictorHead``). Both move after every optimizer step as
    theta_m <- m theta_m + (1 - m) theta, m from ``base_momentum`` to ``final_momentum`` on a
    half-cycle cosine (the authors' ``--moco-m-cos``). The loss sums
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
        loss = MoCoV3Loss(temperature)
        projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias=False)
        predictor = build_mlp(out_dim, pred_hidden_dim, out_dim, 2, batch_norm, predictor_last_norm, bias=False)
        super().__init__(projector, predictor, loss, base_momentum, final_momentum)
