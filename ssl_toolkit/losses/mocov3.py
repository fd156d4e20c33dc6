"""MoCo v3's contrastive loss: InfoNCE of queries against the keys of the global batch, scaled by 2t."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.checks import check_positive
from ssl_toolkit.distributed import gather_with_grad, rank


class MoCoV3Loss(nn.Module):
    """ctr(q, k) of MoCo v3 (Chen, Xie and He, ICCV 2021, arXiv 2104.02057, Algorithm 1).

    With q_i, k_j unit-normalized, N queries on this process and the keys of all W processes::

        ctr(q, k) = 2t * mean_i CE([q_i . k_1, ..., q_i . k_{WN}] / t, label = rank * N + i)

    i.e. each query's positive is the key of the same image (the other view, from the momentum
    encoder) and its negatives are the keys of every other image of the global batch; there is
    no queue. The factor 2t is the authors' (``moco/builder.py``: ``CrossEntropyLoss()(logits,
    labels) * (2 * self.T)``), which makes the gradient's scale independent of t. The symmetric
    MoCo v3 loss ctr(q1, k2) + ctr(q2, k1) is the head's sum of two calls (``MoCoV3Head``).

    Keys are gathered from every process *with* gradient (``gather_with_grad``): the momentum
    encoder's keys carry none, so this changes nothing there, and keys that do carry one (a key
    encoder without momentum) get the gradient that every process's queries send them. With
    DDP's gradient averaging, W processes equal one process on the global batch. Logits are fp32
    under autocast.

    Args:
        temperature: t > 0 (MoCo v3 ResNet-50: 1.0, ViT: 0.2; solo-learn ImageNet-100: 0.2).

    Raises:
        ValueError: ``temperature`` not > 0; ``q`` and ``k`` not both (N, D) of one shape.

    Shapes:
        q: (N, D) queries (predictor outputs of one view); k: (N, D) keys (momentum projections of
        the other view). Returns a scalar.

    Example:
        >>> MoCoV3Loss(temperature=0.2)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = temperature

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        if q.shape != k.shape or q.dim() != 2:
            raise ValueError(f"q and k must both be (N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
        with torch.autocast(device_type=q.device.type, enabled=False):
            q = F.normalize(q.float(), dim=1)
            keys = gather_with_grad(F.normalize(k.float(), dim=1))  # (W N, D), rank-ordered
            logits = q @ keys.T / self.temperature  # (N, W N)
            labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
            return F.cross_entropy(logits, labels) * (2 * self.temperature)
