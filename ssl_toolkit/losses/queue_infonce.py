"""MoCo's InfoNCE against a queue of keys (He et al., CVPR 2020, arXiv 1911.05722, Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (unit q (B, D), unit queue (K, D), masked q.queue logits (B, K)) -> {log name: (B, s) similarities}
ExtraNegatives = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


class QueueInfoNCELoss(nn.Module):
    """InfoNCE of each query against its key and a queue of negatives, MoCo's loss (Eq. 1)::

        q, k, queue <- unit rows (k and the queue carry no gradient)
        L_i = CE([q_i.k_i | q_i.queue] / t, label 0),  L = mean_i L_i

    ``exclude`` (B, K) bool marks queue entries that are not negatives of query i (older keys of the
    same image: with a queue larger than an epoch's worth of keys, or a small data set, the queue
    holds them); they get logit -inf. Logits are fp32 (double kept, for exact tests), also under
    autocast. Variants add negatives through :meth:`infonce`'s ``extra_negatives`` (MoCHi's mixed
    hard negatives: ``ssl_toolkit.losses.mochi``).

    Args:
        temperature: t > 0 (MoCo v2: 0.2).

    Raises:
        ValueError: ``temperature <= 0``.

    Shapes:
        q, k: (B, D) query / key projections; queue: (K, D). Returns (scalar, logs) where logs holds
        the detached mean positive similarity ``pos_sim``.

    Example:
        >>> loss, logs = QueueInfoNCELoss(0.2)(torch.randn(4, 16), torch.randn(4, 16), torch.randn(32, 16))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    @staticmethod
    def unit(x: Tensor, detach: bool = False) -> Tensor:
        """Unit rows in fp32 at least (double kept): (..., D) -> (..., D)."""
        x = x.detach() if detach else x
        return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)

    def forward(
        self, q: Tensor, k: Tensor, queue: Tensor, exclude: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.infonce(q, k, queue, exclude)

    def infonce(
        self,
        q: Tensor,
        k: Tensor,
        queue: Tensor,
        exclude: Tensor | None = None,
        extra_negatives: ExtraNegatives | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss, with the similarities (B, s) that ``extra_negatives`` returns appended as more
        negative logits, each logged as its detached mean under its name."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, queue = self.unit(q), self.unit(k, detach=True), self.unit(queue, detach=True)
            l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
            l_neg = q @ queue.T  # (B, K)
            if exclude is not None:
                l_neg = l_neg.masked_fill(exclude, float("-inf"))
            parts, logs = [l_pos, l_neg], {"pos_sim": l_pos.detach().mean()}
            if extra_negatives is not None:
                for name, sim in extra_negatives(q, queue, l_neg).items():
                    parts.append(sim)
                    logs[name] = sim.detach().mean()
            logits = torch.cat(parts, dim=1) / self.temperature
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            return F.cross_entropy(logits, labels), logs
