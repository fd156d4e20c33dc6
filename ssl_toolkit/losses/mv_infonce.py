"""MV-InfoNCE: one InfoNCE term per image over all its views (Koromilas et al., arXiv 2507.06979)."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.losses.multi_view import MultiViewBatch, MultiViewContrastiveLoss


class MVInfoNCELoss(MultiViewContrastiveLoss):
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

    Args, shapes, errors: as ``MultiViewContrastiveLoss`` (the authors use t = 0.5 on CIFAR /
    ImageNet-100, 0.1 on ImageNet-1k).

    Example:
        >>> MVInfoNCELoss(0.5)([torch.randn(8, 16) for _ in range(4)]).shape
        torch.Size([])
    """

    def log_positives(self, pair_logits: Tensor) -> Tensor:
        eye = torch.eye(pair_logits.shape[1], dtype=torch.bool, device=pair_logits.device)
        return pair_logits.masked_fill(eye, float("-inf")).flatten(1).logsumexp(dim=1)  # (M,) over l != l'

    def log_negatives(self, mv: MultiViewBatch) -> Tensor:
        logits = torch.einsum("lid,mjd->ilmj", mv.anchors, mv.keys) / self.temperature  # (M, V, V, W*M)
        eye = torch.eye(mv.anchors.shape[0], dtype=torch.bool, device=logits.device)
        self_term = eye[None, :, :, None] & mv.is_self()[:, None, None, :]  # (j, m) == (i, l)
        return logits.masked_fill(self_term, float("-inf")).flatten(1).logsumexp(dim=1)  # (M,)
