"""The multi-view loss contract, ``loss(views)`` on V >= 2 projections of the same images, and its
skeletons: gather the views once, then score them (``MultiViewLoss``, ``MultiViewContrastiveLoss``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.distributed import gather_with_grad, rank


@dataclass
class MultiViewBatch:
    """Normalized local views and their keys gathered from every process.

    Attributes:
        anchors: (V, N, D) fp32 unit-normalized local projections.
        keys: (V, W*N, D) the same from every process (rank-ordered), gathered with gradient.
        local: (N,) index of each local image among the W*N gathered images.
    """

    anchors: Tensor
    keys: Tensor
    local: Tensor

    def is_self(self) -> Tensor:
        """(N, W*N) bool: True where key j is the anchor's own image."""
        cols = torch.arange(self.keys.shape[1], device=self.keys.device)
        return cols[None, :] == self.local[:, None]


def multi_view_batch(views: Sequence[Tensor]) -> MultiViewBatch:
    """Check, normalize (fp32) and gather V views; call under ``torch.autocast(enabled=False)``.

    One all-gather of the stacked (N, V, D) tensor with gradient (``gather_with_grad``): with DDP's
    gradient averaging, W processes of N images equal one process of W*N.

    Raises:
        ValueError: fewer than 2 views, or views that are not all (N, D) of one shape.
    """
    if len(views) < 2:
        raise ValueError(f"a multi-view loss needs at least 2 views, got {len(views)}")
    shape = tuple(views[0].shape)
    if len(shape) != 2 or any(tuple(v.shape) != shape for v in views):
        raise ValueError(f"views must all be (N, D) of one shape, got {[tuple(v.shape) for v in views]}")
    anchors = F.normalize(torch.stack([v.float() for v in views]), dim=-1)  # (V, N, D)
    keys = gather_with_grad(anchors.transpose(0, 1).contiguous()).transpose(0, 1)  # (V, W*N, D)
    n = shape[0]
    local = torch.arange(n, device=anchors.device) + rank() * n
    return MultiViewBatch(anchors, keys, local)


class MultiViewLoss(nn.Module):
    """Base class of losses that score all V views of an image in one term.

    A multi-view loss is called as ``loss(views)`` with a list of V >= 2 tensors (N, D), one per
    view of the same N images (row i of every tensor is image i; global views first, then local
    crops). :class:`~ssl_toolkit.heads.SimCLRHead` passes all its views at once to a loss of this
    class; a two-view loss ``loss(z_a, z_b)`` is instead averaged over view pairs. Returns a scalar.

    The skeleton: ``forward`` checks, normalizes (fp32, also under autocast) and gathers the views
    (:func:`multi_view_batch`); subclasses give the math in :meth:`score`.
    """

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        with torch.autocast(device_type=views[0].device.type, enabled=False):
            return self.score(multi_view_batch(views))

    def score(self, mv: MultiViewBatch) -> Tensor:  # pragma: no cover - abstract
        """The scalar loss of this process's images from their gathered views."""
        raise NotImplementedError


class MultiViewContrastiveLoss(MultiViewLoss):
    """A multi-view loss of the form, at temperature t, for M images with V views each::

        L = (1/M) sum_i [ log_negatives_i - log_positives_i ]

    where ``log_positives`` (M,) reduces the logits U_il . U_il' / t between image i's own views
    and ``log_negatives`` (M,) is the log of the normalizer over the batch. The two terms are what
    MV-InfoNCE and MV-DHEL (Koromilas et al., arXiv 2507.06979) differ in.

    Args:
        temperature: t > 0.

    Shapes:
        views: V >= 2 tensors (M, D). Returns a scalar.

    Raises:
        ValueError: ``temperature <= 0``; fewer than 2 views or views of different shapes.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, mv: MultiViewBatch) -> Tensor:
        u = mv.anchors  # (V, M, D)
        pos = self.log_positives(torch.einsum("lid,mid->ilm", u, u) / self.temperature)  # (M,)
        return (self.log_negatives(mv) - pos).mean()

    def log_positives(self, pair_logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        """(M, V, V) logits between the views of each image -> (M,)."""
        raise NotImplementedError

    def log_negatives(self, mv: MultiViewBatch) -> Tensor:  # pragma: no cover - abstract
        """The gathered views -> (M,): each image's log normalizer, from logits / t."""
        raise NotImplementedError
