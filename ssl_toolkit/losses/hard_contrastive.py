"""Hardness-aware contrastive loss with explicit hard negatives (Wang & Liu, CVPR 2021, Eq. 9)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssl_toolkit.losses.two_view import two_view_logits


class HardContrastiveLoss(nn.Module):
    """NT-Xent restricted to each anchor's hardest negatives (Wang & Liu, "Understanding the
    Behaviour of Contrastive Loss", CVPR 2021, arXiv 2012.09740, Eq. 8-9, "HardContrastive").

    For the 2N views of N images (unit-normalized, s_ik = z_i . z_k), anchor i with positive p(i),
    and s_alpha^(i) the upper-alpha quantile of its 2N - 2 negative similarities::

        L_i = -log( exp(s_{i,p(i)} / t) / ( sum_{k : s_ik >= s_alpha^(i)} exp(s_ik / t) + exp(s_{i,p(i)} / t) ) )

    i.e. only the K = ceil(alpha * (2N - 2)) most similar negatives stay in the denominator (picked
    per anchor without gradient; the gradient of the others is truncated). alpha = 1 is plain
    NT-Xent. The paper mines the 4095 nearest of a memory bank of the whole data set
    (alpha = 4095 / 50,000 = 0.0819 on CIFAR); here the pool is the (global) batch, both views of
    the other images, as in :class:`NTXentLoss`. The loss is the mean over the 2N anchors; negatives
    are gathered across processes with gradient and K counts the global pool. fp32 under autocast.

    Args:
        temperature: t > 0. The paper finds the hard loss best at larger t (0.7 on CIFAR and
            ImageNet-100) where plain NT-Xent is best at 0.2-0.3.
        alpha: fraction of negatives kept, 0 < alpha <= 1.

    Shapes:
        z_a, z_b: (N, D) projections of the two views. Returns a scalar.

    Raises:
        ValueError: temperature <= 0, alpha outside (0, 1], views of different shapes.

    Example:
        >>> HardContrastiveLoss(0.7, alpha=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.7, alpha: float = 0.0819) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha: must be in (0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    def num_hard(self, num_negatives: int) -> int:
        """K = ceil(alpha * num_negatives), at least 1."""
        return max(1, math.ceil(self.alpha * num_negatives - 1e-9))

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            pairs = two_view_logits(z_a, z_b, self.temperature)
            positive = pairs.positives()  # (2N,)
            negatives = pairs.masked(drop_positive=True)  # (2N, 2WN), self and positive at -inf
            k = self.num_hard(negatives.shape[1] - 2)
            hard = negatives.topk(k, dim=1).values  # (2N, K)
            return (torch.logsumexp(torch.cat([positive[:, None], hard], dim=1), dim=1) - positive).mean()
