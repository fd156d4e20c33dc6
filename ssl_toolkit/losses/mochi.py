"""MoCHi: MoCo v2 InfoNCE with hard negative mixing (Kalantidis et al., NeurIPS 2020, arXiv 2010.01028)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.losses.queue_infonce import QueueInfoNCELoss


class MoCHiLoss(QueueInfoNCELoss):
    """MoCo v2 InfoNCE (``QueueInfoNCELoss``) plus synthetic hard negatives mixed per query
    (Kalantidis et al., 2020).

    With unit-normalized q, k and queue, and Q~_i = the N = min(num_hard, K) queue entries with the
    largest q_i . n (the hardest negatives of query i, selected without gradient)::

        h   = normalize(alpha * n_a + (1 - alpha) * n_b),  n_a, n_b ~ U(Q~_i), alpha ~ U(0, 1)   (s of them)
        h'  = normalize(beta * q_i + (1 - beta) * n),      n ~ U(Q~_i),        beta ~ U(0, w)     (s' of them)
        L_i = CE([q_i.k_i | q_i.queue | q_i.H_i | q_i.H'_i] / t, label 0),  L = mean_i L_i

    with w = max_query_weight <= 0.5, so the query never dominates h'. H and H' are built from
    q.detach() and detached queue entries (no gradient through synthetics); they are not enqueued,
    which is the caller's job (only k goes into the queue). k and queue are constants. Everything is
    batched: each query's hard set is a (B, N, D) tensor and the mixing indices are gathered per
    query, avoiding the third-party bug where every query mixes the *first* query's negatives.
    With ``mix=False`` or s = s' = 0 this is exactly ``QueueInfoNCELoss``. Logits are fp32 under autocast.

    Defaults: N=1024, s=1024, s'=256, t=0.2 (MoCo v2). N=1024 and 256 per synthetic type follow the
    synco implementation; the paper's own (N, s, s') and its Table 1 are unverified (docs/methods/mochi.md).
    The warm-up before mixing starts (paper value UNVERIFIED; synco uses 10 epochs) belongs to the
    head, which passes ``mix=False`` during warm-up.

    Args:
        temperature: t > 0.
        num_hard: N, size of each query's hard-negative set (0 disables mixing).
        num_mixed: s, negative-negative mixtures per query.
        num_query_mixed: s', query-negative mixtures per query.
        max_query_weight: upper bound w of beta, in (0, 0.5].

    ``exclude`` (B, K) bool marks queue entries that are not negatives of query i (as
    ``QueueInfoNCELoss``): they get logit -inf and are never picked as hard negatives; [davidsvy]
    masks the same way, by sample index.

    Shapes:
        q, k: (B, D) query / key projections; queue: (K, D). Returns (scalar, logs) where logs holds
        detached ``pos_sim`` and, when present, ``hard_mixed_mean_sim`` / ``query_mixed_mean_sim``.

    Example:
        >>> loss, logs = MoCHiLoss(num_hard=8, num_mixed=4, num_query_mixed=2)(
        ...     torch.randn(4, 16), torch.randn(4, 16), torch.randn(32, 16))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 0.2,
        num_hard: int = 1024,
        num_mixed: int = 1024,
        num_query_mixed: int = 256,
        max_query_weight: float = 0.5,
    ) -> None:
        super().__init__(temperature)
        if min(num_hard, num_mixed, num_query_mixed) < 0:
            raise ValueError("num_hard, num_mixed, num_query_mixed: must be >= 0")
        if not 0 < max_query_weight <= 0.5:
            raise ValueError(f"max_query_weight: must be in (0, 0.5], got {max_query_weight}")
        self.num_hard, self.num_mixed, self.num_query_mixed = num_hard, num_mixed, num_query_mixed
        self.max_query_weight = max_query_weight

    def _rand(
        self, shape: tuple[int, ...], high: int | None, device: torch.device, gen: torch.Generator | None
    ) -> Tensor:
        # Draw on the generator's device (torch requires it), then move; None uses the global RNG.
        where = gen.device if gen is not None else device
        if high is None:
            return torch.rand(shape, generator=gen, device=where).to(device)
        return torch.randint(0, high, shape, generator=gen, device=where).to(device)

    def _synthesize(
        self, q: Tensor, queue: Tensor, l_neg: Tensor, gen: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """H (B, s, D), H' (B, s', D) from normalized q, queue and their (B, K) similarities."""
        b, d = q.shape
        n = min(self.num_hard, queue.shape[0])
        with torch.no_grad():
            hard = queue[l_neg.topk(n, dim=1).indices]  # (B, N, D): row i is query i's own hard set

            def pick(count: int) -> Tensor:  # (B, count, D), indices into each query's own hard set
                idx = self._rand((b, count), n, q.device, gen)
                return torch.gather(hard, 1, idx[..., None].expand(b, count, d))

            s, s2 = self.num_mixed, self.num_query_mixed
            n_a, n_b = pick(s), pick(s)
            alpha = self._rand((b, s, 1), None, q.device, gen).to(q.dtype)
            mixed = F.normalize(alpha * n_a + (1 - alpha) * n_b, dim=-1)
            neg = pick(s2)
            beta = self.max_query_weight * self._rand((b, s2, 1), None, q.device, gen).to(q.dtype)
            query_mixed = F.normalize(beta * q.detach()[:, None] + (1 - beta) * neg, dim=-1)
        return mixed, query_mixed

    def synthetic_negatives(
        self, q: Tensor, queue: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The (B, s, D) and (B, s', D) synthetic negatives forward would use with the same generator state."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, queue = self.unit(q, detach=True), self.unit(queue, detach=True)
            return self._synthesize(q, queue, q @ queue.T, generator)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        queue: Tensor,
        mix: bool = True,
        generator: torch.Generator | None = None,
        exclude: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        mixing = self.num_mixed > 0 or self.num_query_mixed > 0
        if not (mix and self.num_hard > 0 and mixing and queue.shape[0] > 0):
            return self.infonce(q, k, queue, exclude)
        return self.infonce(q, k, queue, exclude, partial(self._mixed_similarities, generator=generator))

    def _mixed_similarities(
        self, q: Tensor, queue: Tensor, l_neg: Tensor, generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """q . H (B, s) and q . H' (B, s') from unit q, queue and the masked (B, K) logits; gradient
        to q only (the synthetics are detached)."""
        mixed, query_mixed = self._synthesize(q.detach(), queue, l_neg.detach(), generator)
        pairs = (("hard_mixed_mean_sim", mixed), ("query_mixed_mean_sim", query_mixed))
        return {name: torch.einsum("bd,bsd->bs", q, h) for name, h in pairs if h.shape[1] > 0}
