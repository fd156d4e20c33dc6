"""GroCo: group ordering constraints on a differentiable sorting network (Shvetsova et al., ICCV 2023)."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from diffsort.functional import sort as diffsort_sort
from diffsort.networks import get_sorting_network
from torch import Tensor

from ssl_toolkit.checks import check_int
from ssl_toolkit.losses.multi_view import MultiViewBatch, MultiViewLoss


@lru_cache(maxsize=32)
def _odd_even_network(size: int, device: torch.device) -> list:
    """diffsort's odd-even transposition network for ``size`` wires on ``device`` (built once)."""
    return get_sorting_network("odd_even", size, device)


def soft_sort(x: Tensor, steepness: float = 1.0) -> tuple[Tensor, Tensor]:
    """Differentiable ascending sort with an odd-even network and the Cauchy relaxation.

    Petersen et al., "Monotonic differentiable sorting networks" (ICLR 2022), via the ``diffsort``
    package the GroCo authors use. Each comparator of wires (a, a+1) mixes them with
    alpha = 1/2 + arctan(steepness * (x_{a+1} - x_a)) / pi (soft min / soft max), and applies the
    same mixing to columns a, a+1 of a running matrix that starts at the identity.

    Args:
        x: (B, n) values; n >= 2.
        steepness: beta > 0 (GroCo: 1).

    Returns:
        sorted: (B, n) soft-sorted values, ascending; equals ``x @ P``.
        P: (B, n, n), doubly stochastic; P[b, i, j] = weight of input element i at ascending output
        rank j (the transpose of the paper's notation, as in diffsort).
    """
    if x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"x must be (B, n) with n >= 2, got {tuple(x.shape)}")
    return diffsort_sort(_odd_even_network(x.shape[1], x.device), x, steepness=steepness, distribution="cauchy")


def group_ordering_loss(scores: Tensor, num_negatives: int, steepness: float = 1.0) -> Tensor:
    """GroCo's BCE on group membership of ranks for pre-ordered scores (Shvetsova et al., Sec. 3).

    ``scores`` holds each anchor's k = ``num_negatives`` negative similarities followed by its P
    positive similarities; the target ranking puts every positive above every negative, and only
    membership of the top-P group counts (order within a group is not penalised)::

        q_i = sum_{j >= k} P_ij,   t_i = 1[i >= k]
        L = ( mean_i BCE(q_i, t_i) + mean_i BCE(sum_{j < k} P_ij, 1 - t_i) ) / 2

    averaged over the batch (both halves are equal up to rounding, rows of P sum to 1); values
    clipped to [0, 1] and logs clamped at -100 as ``torch.nn.BCELoss`` does, as in the authors' code.

    Args:
        scores: (B, k + P) similarities (the caller pre-sorts each group ascending).
        num_negatives: k, 1 <= k < n.
        steepness: beta of the sorting relaxation.

    Returns:
        scalar.
    """
    n = scores.shape[1]
    if not 1 <= num_negatives < n:
        raise ValueError(f"num_negatives must be in [1, {n - 1}], got {num_negatives}")
    _, perm = soft_sort(scores, steepness)
    target = (torch.arange(n, device=scores.device) >= num_negatives).to(scores.dtype).expand_as(scores)
    top = perm[:, :, num_negatives:].sum(dim=2).clamp(0, 1)
    bottom = perm[:, :, :num_negatives].sum(dim=2).clamp(0, 1)
    return (F.binary_cross_entropy(top, target) + F.binary_cross_entropy(bottom, 1 - target)) / 2


class GroCoLoss(MultiViewLoss):
    """GroCo (Shvetsova, Petersen, Kukleva, Schiele, Kuehne, "Learning by Sorting: Self-supervised
    Learning with Group Ordering Constraints", ICCV 2023; the authors' ``losses/groco.py``).

    Every view v is the anchor in turn. For anchor a = z_{v,i} (unit-normalized, cosine scores, no
    temperature):

    * positives: a . z_{u,i} for the other *positive views* u != v (all views, or only the first
      ``positive_views`` ones, i.e. the global crops of multi-crop): P = positive_views - 1 for a
      positive-view anchor, P = positive_views for a local crop;
    * negatives: a . z_{v,j}, j != i, other images **in the anchor's own view**, gathered from every
      process; the k = ``top_k_negatives`` largest are kept;
    * both groups sorted ascending, negatives first, then sorted by :func:`soft_sort` and scored
      with :func:`group_ordering_loss`.

    With ``stop_grad`` (the authors' default) the positives and negatives are detached: only the
    anchor gets gradient. The loss is the mean over anchors, then over the V anchor views; fp32 under
    autocast. Keys are gathered with gradient (all-reduce backward), so ``stop_grad=False`` is
    correct across processes too.

    Args:
        top_k_negatives: k >= 1 hardest negatives per anchor (10); needs a (global) batch > k.
        steepness: beta of the Cauchy relaxation (1; at beta = 1 on cosines the loss never nears 0).
        stop_grad: detach positives and negatives.
        positive_views: how many leading views are positives (None: all; 2 for multi-crop).

    Shapes:
        views: V >= 2 tensors (N, D). Returns a scalar.

    Raises:
        ValueError: bad arguments; fewer than 2 positive views; a global batch of at most k images.

    Example:
        >>> GroCoLoss(top_k_negatives=3)([torch.randn(8, 16) for _ in range(2)]).shape
        torch.Size([])
    """

    def __init__(
        self,
        top_k_negatives: int = 10,
        steepness: float = 1.0,
        stop_grad: bool = True,
        positive_views: int | None = None,
    ) -> None:
        super().__init__()
        check_int("top_k_negatives", top_k_negatives)
        if steepness <= 0:
            raise ValueError(f"steepness: must be > 0, got {steepness}")
        check_int("positive_views", positive_views, minimum=2, optional=True)
        self.top_k_negatives = top_k_negatives
        self.steepness = steepness
        self.stop_grad = stop_grad
        self.positive_views = positive_views

    def score(self, mv: MultiViewBatch) -> Tensor:
        u, keys = mv.anchors, mv.keys  # (V, N, D), (V, W*N, D)
        num_pos = u.shape[0] if self.positive_views is None else self.positive_views
        if num_pos > u.shape[0]:
            raise ValueError(f"positive_views: {num_pos} is more than the {u.shape[0]} views")
        k = self.top_k_negatives
        if keys.shape[1] <= k:
            raise ValueError(f"top_k_negatives: {k} needs a global batch of more than {k} images, got {keys.shape[1]}")
        if self.stop_grad:
            targets, keys = u.detach(), keys.detach()
        else:
            targets = u
        losses = []
        for v in range(u.shape[0]):
            anchor = u[v]  # (N, D)
            others = [p for p in range(num_pos) if p != v]
            pos = torch.einsum("nd,pnd->np", anchor, targets[others]).sort(dim=1).values  # (N, P) ascending
            neg = (anchor @ keys[v].T).masked_fill(mv.is_self(), float("-inf"))  # (N, W*N), own view
            neg = neg.topk(k, dim=1).values.flip(1)  # (N, k) ascending
            losses.append(group_ordering_loss(torch.cat([neg, pos], dim=1), k, self.steepness))
        return torch.stack(losses).mean()
