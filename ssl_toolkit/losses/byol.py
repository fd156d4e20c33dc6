"""BYOL's regression loss: normalized mean squared error between prediction and target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BYOLLoss(nn.Module):
    """L(p, z) of BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733, Eq. 2)::

        L = mean_i || p_i / |p_i| - z_i / |z_i| ||^2 = mean_i (2 - 2 cos(p_i, sg(z_i)))

    p is the online network's prediction of one view, z the target network's projection of the
    other view; sg is stop-gradient (the target is a constant: no gradient reaches z). The two
    directions of the symmetric BYOL loss are the head's sum of two calls (``BYOLHead``), as in
    the paper (L + L~) and solo-learn. A per-sample mean: no process needs another's rows.
    Computed in fp32 under autocast, with ``F.cosine_similarity`` (eps 1e-8, as solo-learn's
    ``byol_loss_func`` and lightly's ``NegativeCosineSimilarity``, which returns -cos: this loss
    is 2 + 2 x lightly's).

    Raises:
        ValueError: ``p`` and ``z`` not both (N, D) of one shape.

    Shapes:
        p: (N, D) predictions; z: (N, D) targets. Returns a scalar in [0, 4].

    Example:
        >>> BYOLLoss()(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        if p.shape != z.shape or p.dim() != 2:
            raise ValueError(f"p and z must both be (N, D), got {tuple(p.shape)} and {tuple(z.shape)}")
        with torch.autocast(device_type=p.device.type, enabled=False):
            return 2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
