"""Barlow Twins head: projector + the cross-correlation loss. Method page: docs/methods/barlow_twins.md."""

from __future__ import annotations

from torch import Tensor

from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.heads.view_pairs import ViewPairsHead
from ssl_toolkit.losses.barlow_twins import BarlowTwinsLoss


class BarlowTwinsHead(ViewPairsHead):
    """Barlow Twins (Zbontar et al., ICML 2021, arXiv 2103.03230): z = g(h) per view, then
    ``BarlowTwinsLoss`` (Eq. 1-2: cross-correlation over the global batch, weight ``lambd``).

    The projector is the authors' (facebookresearch/barlowtwins ``main.py``): ``num_layers``
    Linear layers without bias, BatchNorm and ReLU after each hidden one (paper: 3 x 8192). Each
    view goes through it separately, so BatchNorm's statistics are per view as in the authors'
    code. With more than two views the loss is averaged over every pair (``ViewPairsHead``).

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers, batch_norm: projector (paper: 8192, 8192, 3, BN).
        lambd: lambda of the redundancy term (paper: 5.1e-3).
        scale_loss: constant factor on the loss (paper: 1; solo-learn's configs: 0.1).

    Raises:
        ValueError: a bad width or loss argument (naming the keyword); at forward, fewer than 2 views.

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
        lambd: float = 0.0051,
        scale_loss: float = 1.0,
    ) -> None:
        super().__init__()
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, "none", bias=False)
        self.loss = BarlowTwinsLoss(lambd=lambd, scale_loss=scale_loss)

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, out_dim): the projector's output, the space the loss decorrelates."""
        return self.projector(feats)
