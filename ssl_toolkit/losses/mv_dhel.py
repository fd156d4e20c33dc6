"""MV-DHEL: multi-view decoupled hyperspherical energy loss (Koromilas et al., arXiv 2507.06979)."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.losses.multi_view import MultiViewBatch, MultiViewContrastiveLoss


class MVDHELLoss(MultiViewContrastiveLoss):
    """MV-DHEL (Koromilas et al., arXiv 2507.06979; the authors' ``models/losses.py::MVDHEL``).

    For M images with V views each, unit-normalized U_il (image i, view l)::

        L = (1/M) sum_i [ -log sum_{l < l'} exp(U_il . U_il' / t)
                          + sum_l log sum_{j != i} exp(U_il . U_jl / t) ]

    Alignment over the *unordered* pairs of i's views; uniformity per view, against the other
    images *in the same view* only (decoupled: no positive in any denominator, no cross-view
    negatives), one log per view. The authors' code writes this as ``-log(pos / prod_l neg_l)`` with
    raw exponentials, which overflows at small t or in half precision; here it is computed in log
    space, ``-logsumexp(pos) + sum_l logsumexp(neg_l)``, in fp32 (also under autocast). The README's
    formula keeps j = i in each view's sum; the code (followed here) leaves it out.
    Keys are gathered across processes with gradient; each process scores its own images.

    Args, shapes, errors: as ``MultiViewContrastiveLoss`` (the authors use t = 0.5 on CIFAR /
    ImageNet-100, 0.1 on ImageNet-1k).

    Example:
        >>> MVDHELLoss(0.5)([torch.randn(8, 16) for _ in range(4)]).shape
        torch.Size([])
    """

    def log_positives(self, pair_logits: Tensor) -> Tensor:
        v = pair_logits.shape[1]
        upper = torch.triu_indices(v, v, offset=1, device=pair_logits.device)  # (2, V(V-1)/2): l < l', no sync
        return pair_logits[:, upper[0], upper[1]].logsumexp(dim=1)  # (M,) over l < l'

    def log_negatives(self, mv: MultiViewBatch) -> Tensor:
        logits = torch.einsum("lid,ljd->lij", mv.anchors, mv.keys) / self.temperature  # (V, M, W*M), same view
        return logits.masked_fill(mv.is_self()[None], float("-inf")).logsumexp(dim=2).sum(dim=0)  # (M,)
