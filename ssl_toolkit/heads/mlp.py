"""Projector MLP builder shared by the heads."""

from __future__ import annotations

from torch import nn


def build_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False
) -> nn.Sequential:
    """Linear -> [BN] -> ReLU blocks, then a final Linear: (B, in_dim) -> (B, out_dim).

    ``num_layers`` counts Linear layers (SimCLR v1 and solo-learn use 2; SimCLR v2 uses 3).
    With batch_norm the hidden Linears drop their bias (BN has one).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers: must be >= 1, got {num_layers}")
    for name, dim in (("hidden_dim", hidden_dim if num_layers > 1 else 1), ("out_dim", out_dim)):
        if dim < 1:
            raise ValueError(f"{name}: must be >= 1, got {dim}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)
