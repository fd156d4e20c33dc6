"""VICReg head: expander + the variance-invariance-covariance loss. Method page: docs/methods/vicreg.md."""

from __future__ import annotations

from torch import Tensor

from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.heads.view_pairs import ViewPairsHead
from ssl_toolkit.losses.vicreg import VICRegLoss


class VICRegHead(ViewPairsHead):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022, arXiv 2105.04906): z = h_phi(y) per view (the
    expander), then ``VICRegLoss`` (Eq. 6 with weights lambda, mu, nu; statistics over the global
    batch).

    The expander is the authors' (facebookresearch/vicreg ``main_vicreg.py`` ``Projector``):
    ``num_layers`` Linear layers, BatchNorm and ReLU after each hidden one, no bias on the last
    (paper: 3 x 8192). Each view goes through it separately (per-view BatchNorm statistics, as the
    authors' code). With more than two views the loss is averaged over every pair (``ViewPairsHead``).

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers, batch_norm: expander (paper: 8192, 8192, 3, BN).
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (paper: 25, 25, 1).

    Raises:
        ValueError: a bad width or weight (naming the keyword); at forward, fewer than 2 views.

    Shapes:
        views.feats: V >= 2 tensors (B, F). ``embed``: (B, out_dim). Logs ``z_std``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 8192,
        out_dim: int = 8192,
        num_layers: int = 3,
        batch_norm: bool = True,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.expander = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, "none", bias=False)
        self.loss = VICRegLoss(invariance_weight, variance_weight, covariance_weight)

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, out_dim): the expander's output, the space the loss regularizes."""
        return self.expander(feats)
