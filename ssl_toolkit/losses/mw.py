"""MW loss: the Mann-Whitney / AUC objective with pooled negatives (Sheikholeslami et al., arXiv 2510.00137)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.distributed import gather_with_grad


def _off_diagonal(n: int, device: torch.device) -> Tensor:
    """Flat positions (n (n - 1),) of the off-diagonal entries of an (n, n) matrix, row-major (the
    order of ``m[~eye]``), by index arithmetic: a boolean mask would read its count back to the host."""
    k = torch.arange(n * (n - 1), device=device)
    row, col = k // (n - 1), k % (n - 1)
    return row * n + col + (col >= row).long()  # skip the diagonal entry of each row


class MWLoss(nn.Module):
    """MW loss (Sheikholeslami, Hosseini, Bechard, Daruru, Rajeswar, "Optimizing What Matters:
    AUC-Driven Learning for Robust Neural Retrieval", arXiv 2510.00137, Eq. 3 with the temperature
    of Lemma 2 / Sec. 5.1).

    Two views of N images as queries (view a) and passages (view b); s(x, y) is the cosine.
    The positive of query i is the other view of image i, s_i+ = s(a_i, b_i); the negatives are
    **pooled over the whole batch**: S- = {s(a_j, b_k) : j != k}, every off-diagonal score of
    every query (|S-| = N(N - 1)). Every positive is compared with every pooled negative::

        L = (1/N) sum_i (1/|S-|) sum_{s in S-} softplus((s - s_i+) / t)      (reduction="mean")
        L = (1/N) sum_i          sum_{s in S-} softplus((s - s_i+) / t)      (reduction="sum", Eq. 3)

    softplus(x) = -log sigmoid(-x). The mean form is the one Lemma 2 bounds (AoC <= L / log 2) and
    keeps the loss scale independent of N; the sum form is Eq. 3 as printed (gradient scaled by
    N(N - 1), so lr must shrink accordingly). The loss is symmetric in (a, b): swapping queries and
    passages transposes the score matrix, which leaves the positives and the pooled set unchanged,
    so "both directions averaged" is this one term. Under torch.distributed both views are gathered
    with gradient; the pool is the global batch's, each process scores its own positives.
    Memory is O(N_local * N_global^2): about 17M entries per direction for N = 256 on one process.
    fp32 under autocast.

    Args:
        temperature: t > 0 (the paper: 0.01).
        reduction: ``"mean"`` or ``"sum"`` over the pooled negatives.

    Shapes:
        z_a, z_b: (N, D) projections of the two views. Returns a scalar.

    Raises:
        ValueError: temperature <= 0, an unknown reduction, views of different shapes or N < 2.

    Example:
        >>> MWLoss(0.01)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.01, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: must be 'mean' or 'sum', got {reduction!r}")
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape or z_a.dim() != 2 or z_a.shape[0] < 1:
            raise ValueError(f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            a = F.normalize(z_a.float(), dim=1)
            b = F.normalize(z_b.float(), dim=1)
            keys_a, keys_b = gather_with_grad(a), gather_with_grad(b)  # (W*N, D)
            if keys_a.shape[0] < 2:
                raise ValueError("MWLoss needs a (global) batch of at least 2 images")
            scores = keys_a @ keys_b.T / self.temperature  # (W*N, W*N): query j, passage k
            pooled = scores.flatten()[_off_diagonal(scores.shape[0], scores.device)]  # (W*N * (W*N - 1),)
            positives = (a * b).sum(dim=1) / self.temperature  # (N,) this process's images
            diffs = F.softplus(pooled[None, :] - positives[:, None])  # (N, |S-|)
            per_positive = diffs.mean(dim=1) if self.reduction == "mean" else diffs.sum(dim=1)
            return per_positive.mean()
