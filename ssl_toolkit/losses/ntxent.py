"""NT-Xent (normalized temperature-scaled cross entropy), the SimCLR loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.losses.two_view import two_view_logits


class NTXentLoss(nn.Module):
    """NT-Xent / InfoNCE over two views (Chen et al., 2020, arXiv 2002.05709, Eq. 1).

    For the 2N views of N images, with z unit-normalized and s_ij = z_i . z_j::

        l_i = -log( exp(s_{i,p(i)} / t) / sum_{k != i} exp(s_ik / t) )

    The denominator holds the positive and 2N - 2 negatives (every other view, both views of the
    other images). The loss is the mean of l_i over all 2N anchors, i.e. both directions
    averaged (google-research/simclr returns the *sum* of the two directions, twice this value).

    Under torch.distributed the keys are gathered from every process with gradient, each process
    scores its local anchors against the global keys, and the positive/self columns are offset by
    ``rank * N``; with DDP's gradient averaging this equals one process on the global batch.
    Logits are computed in fp32 even under autocast.

    Args:
        temperature: t > 0.

    Shapes:
        z_a, z_b: (N, D) projections of view a and view b (not necessarily normalized).
        returns: scalar.

    Example:
        >>> loss = NTXentLoss(temperature=0.2)
        >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss(z_a, z_b).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            pairs = two_view_logits(z_a, z_b, self.temperature)
            # Self term masked with -inf (not 0) so it leaves the denominator entirely.
            return F.cross_entropy(pairs.masked(drop_positive=False), pairs.pos_cols)
