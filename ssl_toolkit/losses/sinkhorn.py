"""Sinkhorn-Knopp equipartition of samples over prototypes (SwAV's online codes), distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import is_distributed, world_size


def _all_reduce(x: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    if is_distributed():
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn(scores: Tensor, iterations: int = 3, epsilon: float = 0.05) -> Tensor:
    """Soft codes Q = Diag(u) exp(C / ε) Diag(v) with equal prototype masses (Caron et al. 2020,
    arXiv 2006.09882, Eq. 3 and its Sinkhorn solution; the official ``distributed_sinkhorn``).

    Treats the rows of every process as one batch of B = B_local · world samples: the total and
    the prototype (column) sums are all-reduced across processes, the sample (row) sums are
    local, so N processes give exactly the codes that one process gives on the concatenated
    rows. Every process must pass the same number of rows (queue rows included). Computed in
    fp32 without gradient; the scores are shifted by their global maximum first, which cancels in
    the first normalization and keeps exp(·/ε) finite for any input (exp(1 / 0.05) ≈ 4.9e8).

    Args:
        scores: (B_local, K) prototype scores (cosines in SwAV).
        iterations: Sinkhorn iterations (SwAV: 3).
        epsilon: entropic regularization ε (SwAV: 0.05).

    Returns:
        (B_local, K) float32 codes; each row sums to 1, and over all processes each column sums
        to about B / K (exactly only at convergence).

    Example:
        >>> q = sinkhorn(torch.randn(256, 3000))
        >>> torch.allclose(q.sum(dim=1), torch.ones(256))
        True
    """
    check_int("iterations", iterations)
    if not epsilon > 0:
        raise ValueError(f"epsilon: must be > 0, got {epsilon}")
    s = scores.detach().float()
    peak = _all_reduce(s.max().reshape(1), op=dist.ReduceOp.MAX)
    q = torch.exp((s - peak) / epsilon).T  # (K, B_local)
    num_prototypes, batch = q.shape[0], q.shape[1] * world_size()
    q /= _all_reduce(q.sum().reshape(1))
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # (K, 1): every prototype's mass -> 1 ...
        q /= num_prototypes  # ... -> 1/K
        q /= q.sum(dim=0, keepdim=True)  # (1, B_local): every sample's mass -> 1 ...
        q /= batch  # ... -> 1/B
    return (q * batch).T  # (B_local, K), rows sum to 1
