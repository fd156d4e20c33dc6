"""BYOL head: projector + predictor, regressing the momentum target network's projection."""

from __future__ import annotations

from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.heads.momentum import MomentumPredictorHead
from ssl_toolkit.losses.byol import BYOLLoss


class BYOLHead(MomentumPredictorHead):
    """BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733): online projector g and predictor q,
    target projector g_m, the target network a momentum copy of the online one.

    Online z = g(f(x)), prediction p = q(z); target z' = g_m(f_m(x')), with f_m the EMA backbone
    that ``SSLModule`` keeps (``uses_teacher``) and g_m kept here (``MomentumPredictorHead``). Both
    move after every optimizer step as xi <- tau xi + (1 - tau) theta, tau from ``base_momentum`` to
    ``final_momentum`` on BYOL's cosine schedule (Sec. 3.2). The loss (Eq. 2, ``BYOLLoss``) sums the
    predictions of every view j against the target of every other global view i (teacher views)::

        L = sum_{i global} sum_{j != i} || p_j / |p_j| - sg(z'_i) / |z'_i| ||^2

    which for two views is the paper's symmetric L + L~ (and solo-learn's sum, including its
    multi-crop form). Defaults are solo-learn's ImageNet-100 ResNet-18 setting: projector
    in -> 4096 -> 256 and predictor 256 -> 4096 -> 256, BN + ReLU after the hidden layer, momentum
    0.99 -> 1.0 (the paper's ImageNet run: 0.996 -> 1.0, predictor hidden 4096; solo-learn's
    ImageNet-100 config: 8192). Departures: ``docs/methods/byol.md``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim: projector hidden and output widths.
        pred_hidden_dim: predictor hidden width (its output is ``out_dim``).
        batch_norm: BatchNorm1d after the hidden Linear of projector and predictor (the paper's).
        base_momentum, final_momentum: tau at the first and the last optimizer step, in [0, 1].

    Raises:
        ValueError: a width below 1, or a momentum outside [0, 1].

    Shapes:
        views.feats: V >= 2 tensors (B, F), global views first; views.teacher: the target backbone's
        features of the global views (>= 1, each (B, F)). Returns a scalar loss; logs ``z_std``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        pred_hidden_dim: int = 4096,
        batch_norm: bool = True,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
    ) -> None:
        projector = build_mlp(in_dim, hidden_dim, out_dim, 2, batch_norm)
        predictor = build_mlp(out_dim, pred_hidden_dim, out_dim, 2, batch_norm)
        super().__init__(projector, predictor, BYOLLoss(), base_momentum, final_momentum)
