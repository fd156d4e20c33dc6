"""AMCL head: C independent projectors, one pair-temperature network each, the AMCL loss."""

from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor, nn

from ssl_toolkit.checks import check_int
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.amcl import AMCLLoss, PairTemperature


class AMCLHead(SSLHead):
    """Adaptive Multi-head Contrastive Learning on SimCLR (Wang et al., ECCV 2024, arXiv 2310.05615).

    C projection heads g_c with the same architecture and independent weights give z^c = g_c(h);
    each head has its own pair-adaptive temperature network τ^c(z_i, z_j) (the official code
    builds one per head, though its README says "shared"); the loss is ``AMCLLoss`` (multi-head
    InfoNCE with per-pair temperatures and the Ω regularizer, Eq. 2.1/2.4), averaged over heads.
    With more than two views the loss is averaged over all view pairs (as SimCLRHead).

    ``embed`` returns the *concatenation* of the C projections, (B, C·D): each head is trained to
    be a separate similarity measure, so averaging coordinates of independently initialized heads
    would mix unrelated axes; concatenation keeps every head's geometry.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        num_heads: C (the official code and README figure use 3; the paper's choice is UNVERIFIED).
        hidden_dim: projector hidden width (the official code: 512).
        out_dim: projection width D per head.
        num_layers: Linear layers per projector.
        batch_norm: BN in the projectors' hidden layers (the official code: none).
        last_norm: norm on each projector's output (``build_mlp``; the official code: ``none``).
        bias: bias on Linear layers without a BN after them (the official code: yes).
        tau_min, tau_max: bounds of every pair temperature.
        tau_init: the pair temperatures at initialization.
        reg_weight: β, the weight of Ω(τ) (code default 0.1).
        temperature_hidden_dim: hidden width of each temperature MLP (code default 128).

    Shapes:
        views.feats: V >= 2 tensors (B, F). Returns HeadOutput with a scalar loss and logs
        ``loss_head{c}``, ``reg``, ``tau_mean``, ``tau_min``, ``tau_max``, ``z_std``.

    Example:
        >>> head = AMCLHead(in_dim=512, num_heads=3, hidden_dim=2048, out_dim=128)
        >>> batch = BatchInfo(labels=torch.arange(8) % 4, index=torch.arange(8), step=0, epoch=0)
        >>> out = head(Views([torch.randn(8, 512), torch.randn(8, 512)]), batch)
        >>> out.loss.backward()
    """

    def __init__(
        self,
        in_dim: int,
        num_heads: int = 3,
        hidden_dim: int = 512,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
        last_norm: str = "none",
        bias: bool = True,
        tau_min: float = 0.02,
        tau_max: float = 2.0,
        tau_init: float = 0.2,
        reg_weight: float = 0.1,
        temperature_hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        check_int("num_heads", num_heads)
        self.projectors = nn.ModuleList(
            [build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias) for _ in range(num_heads)]
        )
        self.temperatures = nn.ModuleList(
            [PairTemperature(out_dim, temperature_hidden_dim, tau_min, tau_max, tau_init) for _ in range(num_heads)]
        )
        self.loss = AMCLLoss(reg_weight=reg_weight)
        self.embed_parts = num_heads

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, C·D): the heads' projections side by side, head 0 first."""
        return torch.cat([g(feats) for g in self.projectors], dim=1)

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2:
            raise ValueError(f"AMCLHead needs at least 2 views, got {len(views.feats)}")
        num_views = len(views.feats)
        feats = torch.cat(views.feats)  # one call per projector for all views, then split per view
        z = [g(feats).chunk(num_views) for g in self.projectors]  # z[c][v]: (B, D)
        pairs = list(combinations(range(num_views), 2))
        outs = [self.loss([zc[i] for zc in z], [zc[j] for zc in z], self.temperatures) for i, j in pairs]
        loss = torch.stack([o[0] for o in outs]).mean()
        # Logs: averaged over view pairs, except the extremes of τ.
        logs = {k: torch.stack([o[1][k] for o in outs]).mean() for k in outs[0][1]}
        logs["tau_min"] = torch.stack([o[1]["tau_min"] for o in outs]).min()
        logs["tau_max"] = torch.stack([o[1]["tau_max"] for o in outs]).max()
        logs["z_std"] = embedding_spread(z[0][0])  # head 0, view 0
        return HeadOutput(loss=loss, logs=logs)
