"""Feature Transformation (Zhu et al., ICCV 2021): positive extrapolation and negative interpolation
on MoCo's InfoNCE, with the draws passed in so that the loss itself is deterministic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.losses.queue_infonce import QueueInfoNCELoss


def extrapolate_pair(q: Tensor, k: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Positive extrapolation: q^ = lam q + (1 - lam) k, k^ = lam k + (1 - lam) q.

    With lam >= 1 the pair moves apart along its difference, q^ - k^ = (2 lam - 1)(q - k), about the
    same midpoint (q^ + k^ = q + k), so for unit q, k the positive similarity drops: q^.k^ <= q.k, a
    harder positive. No re-normalization (the authors' ``postmix_norm`` is off by default).

    Shapes: q, k (B, D) -> (B, D), (B, D).
    """
    return lam * q + (1 - lam) * k, lam * k + (1 - lam) * q


def interpolate_queue(queue: Tensor, mu: float, perm: Tensor) -> Tensor:
    """Negative interpolation: queue' = mu queue + (1 - mu) queue[perm], not re-normalized.

    Shapes: queue (K, D), perm (K,) a permutation of range(K) -> (K, D).
    """
    return mu * queue + (1 - mu) * queue[perm]


class FeatureTransformLoss(QueueInfoNCELoss):
    """MoCo's InfoNCE (``QueueInfoNCELoss``) on transformed features (Zhu et al., "Improving Contrastive Learning by
    Visualizing Feature Transformation", ICCV 2021; authors' ``RGBMoCo_dropmix_norm``)::

        q, k, queue <- unit rows (k and the queue carry no gradient)
        q, k  <- extrapolate_pair(q, k, lam)       if lam is given   (lam = 1 + Beta(a_pos, a_pos))
        queue <- interpolate_queue(queue, mu, perm) if mu is given   (mu = Beta(a_neg, a_neg))
        L = CE([q.k | q.queue] / t, label 0)

    lam, mu and perm are drawn by the caller (the head owns the generator): one scalar each per call,
    as the authors' default ``dim_mask='none'``. ``lam=None, mu=None`` is exactly ``QueueInfoNCELoss``. As
    in the authors' code, k^ = lam k + (1 - lam) q keeps q's gradient, so the positive logit reaches
    q through both q^ and k^. ``exclude`` (B, K) marks queue rows that are not negatives of query i
    (its own older keys); a mixed row is excluded when either of its two sources is. Logits are fp32
    under autocast.

    Args:
        temperature: t > 0 (MoCo v2: 0.2).

    Shapes:
        q, k: (B, D); queue: (K, D); perm: (K,) long; exclude: (B, K) bool. Returns (scalar, logs) with
        detached ``pos_sim`` and ``neg_sim`` (mean positive / negative logit x t, after transforming).
    """

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        queue: Tensor,
        lam: float | None = None,
        mu: float | None = None,
        perm: Tensor | None = None,
        exclude: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if (mu is None) != (perm is None):
            raise ValueError("mu and perm: give both (negative interpolation) or neither")
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, queue = self.unit(q), self.unit(k, detach=True), self.unit(queue, detach=True)
            if lam is not None:
                q, k = extrapolate_pair(q, k, lam)
            if mu is not None:
                queue = interpolate_queue(queue, mu, perm)
                if exclude is not None:
                    exclude = exclude | exclude[:, perm]
            l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
            l_neg = q @ queue.T  # (B, K)
            logs = {"pos_sim": l_pos.detach().mean(), "neg_sim": l_neg.detach().mean()}
            if exclude is not None:
                l_neg = l_neg.masked_fill(exclude, float("-inf"))
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            return F.cross_entropy(logits, labels), logs
