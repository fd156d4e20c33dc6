"""SimSiam's loss: negative cosine similarity of a prediction to a stop-gradient projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SimSiamLoss(nn.Module):
    """D(p, sg(z)) of SimSiam (Chen and He, CVPR 2021, arXiv 2011.10566, Eq. 1 and 3)::

        D(p, sg(z)) = -mean_i (p_i / |p_i|) . (z_i / |z_i|)

    p is the predictor's output for one view, z the projection of the other view; sg is
    stop-gradient (``z.detach()``: "z is treated as a constant", Eq. 3), the one ingredient that
    keeps SimSiam from collapsing. The symmetric loss L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2
    (Eq. 4) is the head's mean of two calls (``SimSiamHead``). A per-sample mean: no process needs
    another's rows. Computed in fp32 under autocast with ``F.cosine_similarity`` (eps 1e-8), the
    same value as lightly's ``NegativeCosineSimilarity`` on (p, z.detach()) and solo-learn's
    ``simsiam_loss_func``.

    Raises:
        ValueError: ``p`` and ``z`` not both (N, D) of one shape.

    Shapes:
        p: (N, D) predictions; z: (N, D) projections. Returns a scalar in [-1, 1].

    Example:
        >>> SimSiamLoss()(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        if p.shape != z.shape or p.dim() != 2:
            raise ValueError(f"p and z must both be (N, D), got {tuple(p.shape)} and {tuple(z.shape)}")
        with torch.autocast(device_type=p.device.type, enabled=False):
            return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
