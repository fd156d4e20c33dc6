"""Decoupled contrastive learning: DCL and DCLW (Yeh et al., ECCV 2022, arXiv 2110.06848)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_toolkit.distributed import gather_no_grad, rank
from ssl_toolkit.losses.two_view import two_view_logits


class DCLLoss(nn.Module):
    """DCL: InfoNCE with the positive removed from the denominator (Yeh et al., 2022, Eq. 6).

    For anchor i (either view) with positive p(i), unit-normalized z and s_ik = z_i . z_k::

        L_i = -w_i * s_{i,p(i)} / t + log sum_{k not in {i, p(i)}} exp(s_ik / t)

    i.e. 2N - 2 negatives and no positive in the log-sum-exp; w_i = 1 for DCL. The loss is the
    mean over all 2N anchors, which averages the two directions (as lightly's ``DCLLoss`` does; the
    code lightly cites sums them, twice this value). Negatives are gathered across processes with
    gradient, as in :class:`NTXentLoss`. fp32 under autocast.

    Args:
        temperature: t > 0.

    Shapes:
        z_a, z_b: (N, D) projections of the two views. Returns a scalar.

    Example:
        >>> DCLLoss(temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    def weights(self, z_a: Tensor, z_b: Tensor) -> Tensor | None:
        """Per-image weight of the positive term, (N,); None means 1 (plain DCL)."""
        return None

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            pairs = two_view_logits(z_a, z_b, self.temperature)
            positive = pairs.positives()  # (2N,)
            w = self.weights(z_a.float(), z_b.float())
            if w is not None:
                positive = positive * torch.cat([w, w])  # the same weight for both directions of image i
            negatives = torch.logsumexp(pairs.masked(drop_positive=True), dim=1)  # (2N,)
            return (negatives - positive).mean()


class DCLWLoss(DCLLoss):
    """DCLW: DCL with the positive weighted by a negative von Mises-Fisher kernel (Yeh et al., Eq. 7).

    w_i = 2 - N * softmax_i(s_{i,p(i)} / sigma) over the batch, so the weights average to 1 and
    easy positives (high similarity) get less weight. As in lightly, w is computed on *detached*
    similarities (no gradient through w; the DCL code lightly cites does not detach). Unlike
    lightly, which normalizes over each process's local batch, the softmax runs over the *global*
    batch (similarities gathered without gradient), so N processes give exactly the loss of one
    process on the global batch. sigma = 0.5 as in the paper.

    Args:
        temperature: t > 0.
        sigma: kernel width > 0.

    Shapes:
        z_a, z_b: (N, D) projections of the two views. Returns a scalar.

    Example:
        >>> DCLWLoss(temperature=0.1, sigma=0.5)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5) -> None:
        super().__init__(temperature)
        if sigma <= 0:
            raise ValueError(f"sigma: must be > 0, got {sigma}")
        self.sigma = sigma

    def weights(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.no_grad():
            sim = gather_no_grad(torch.nn.functional.cosine_similarity(z_a, z_b, dim=1))  # (W*N,)
            w = 2 - sim.shape[0] * torch.softmax(sim / self.sigma, dim=0)
            n = z_a.shape[0]
            return w[rank() * n : (rank() + 1) * n]  # this process's images
