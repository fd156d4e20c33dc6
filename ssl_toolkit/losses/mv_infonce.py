"""MV-InfoNCE: one InfoNCE term per image over all its views (Koromilas et al., arXiv 2507.06979)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ssl_toolkit.losses.multi_view import MultiViewLoss, multi_view_batch


class MVInfoNCELoss(MultiViewLoss):
    """MV-InfoNCE (Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning",
    arXiv 2507.06979; the authors' ``models/losses.py::MVINFONCE``).

    For M images with V views each, unit-normalized U_il (image i, view l)::

        L = (1/M) sum_i [ -log sum_{l != l'} exp(U_il . U_il' / t)
                          + log sum_l sum_{(j, m) != (i, l)} exp(U_il . U_jm / t) ]

    The numerator runs over *ordered* pairs of i's views (V(V-1) terms); the denominator over every
    view l of image i as anchor and every other embedding of the batch (other images in every view,
    and i's own other views, i.e. the positives too), as in the authors' code. One term per image,
    not an average of pairwise losses. Both sums are log-sum-exps in fp32 (also under autocast).
    Keys are gathered across processes with gradient; each process scores its own images.

    Args:
        temperature: t > 0 (the authors use 0.5 on CIFAR / ImageNet-100, 0.1 on ImageNet-1k).

    Shapes:
        views: V >= 2 tensors (M, D). Returns a scalar.

    Raises:
        ValueError: temperature <= 0; fewer than 2 views or views of different shapes.

    Example:
        >>> MVInfoNCELoss(0.5)([torch.randn(8, 16) for _ in range(4)]).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        with torch.autocast(device_type=views[0].device.type, enabled=False):
            mv = multi_view_batch(views)
            u, keys = mv.anchors, mv.keys  # (V, M, D), (V, W*M, D)
            v = u.shape[0]
            eye = torch.eye(v, dtype=torch.bool, device=u.device)
            pos = torch.einsum("lid,mid->ilm", u, u) / self.temperature  # (M, V, V)
            pos = pos.masked_fill(eye, float("-inf")).flatten(1).logsumexp(dim=1)  # (M,)
            logits = torch.einsum("lid,mjd->ilmj", u, keys) / self.temperature  # (M, V, V, W*M)
            self_term = eye[None, :, :, None] & mv.is_self()[:, None, None, :]  # (j, m) == (i, l)
            neg = logits.masked_fill(self_term, float("-inf")).flatten(1).logsumexp(dim=1)  # (M,)
            return (neg - pos).mean()
