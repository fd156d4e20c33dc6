"""SwAV swapped prediction: predict each global crop's code from every other crop's scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SwAVLoss(nn.Module):
    """Swapped-prediction loss (Caron et al. 2020, arXiv 2006.09882, Eq. 1-2), multi-crop form.

    For each code crop a (the global crops) and every other crop v != a:
    ℓ(a, v) = -1/B Σ_b Σ_k q_a[b, k] · log softmax(p_v[b] / τ)[k]; the loss is the mean over v of
    ℓ(a, v), then the mean over a (official ``main_swav.py``: ``subloss / (V - 1)``, then
    ``/ len(crops_for_assign)``). Computed in fp32. The codes carry no gradient.

    Args:
        temperature: τ of the softmax over prototype scores (SwAV: 0.1).

    Shapes:
        scores: V tensors (B, K), prototype scores of every crop, code crops first.
        codes: G <= V tensors (B, K), codes of the first G crops (rows sum to 1).
        Returns a scalar, the mean over this process's samples.

    Example:
        >>> from ssl_toolkit.losses import sinkhorn
        >>> loss = SwAVLoss(temperature=0.1)
        >>> p = [torch.randn(8, 30) for _ in range(4)]
        >>> loss(p, [sinkhorn(p[0]), sinkhorn(p[1])]).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, scores: Sequence[Tensor], codes: Sequence[Tensor]) -> Tensor:
        num_views = len(scores)
        if not 1 <= len(codes) <= num_views or num_views < 2:
            raise ValueError(
                f"scores/codes: need V >= 2 score tensors and 1..V codes, got {num_views} and {len(codes)}"
            )
        with torch.autocast(device_type=scores[0].device.type, enabled=False):
            log_p = F.log_softmax(torch.stack(scores).float() / self.temperature, dim=-1)  # (V, B, K)
            terms = []
            for a, q in enumerate(codes):
                others = torch.cat([log_p[:a], log_p[a + 1 :]])  # (V-1, B, K)
                # -Σ_k q log p, averaged over samples and over the V-1 predicting crops.
                terms.append(-(q.detach().float() * others).sum(dim=-1).mean())
            return torch.stack(terms).mean()
