"""Projector MLP builder shared by the heads."""

from __future__ import annotations

from torch import nn

from ssl_toolkit.checks import check_int


def build_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False
) -> nn.Sequential:
    """Linear -> [BN] -> ReLU blocks, then a final Linear: (B, in_dim) -> (B, out_dim).

    ``num_layers`` counts Linear layers (SimCLR v1 and solo-learn use 2; SimCLR v2 uses 3).
    With batch_norm the hidden Linears drop their bias (BN has one).
    """
    check_int("num_layers", num_layers)
    check_int("hidden_dim", hidden_dim if num_layers > 1 else 1)
    check_int("out_dim", out_dim)
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
