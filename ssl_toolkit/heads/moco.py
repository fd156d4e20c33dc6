"""MoCo v2 head (momentum key encoder + queue) and MoCHi, MoCo v2 plus hard-negative mixing.

Method page: ``docs/methods/mocov2.md`` and ``docs/methods/mochi.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import gather_no_grad
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.heads.momentum import MomentumProjectorHead
from ssl_toolkit.losses.mochi import MoCHiLoss
from ssl_toolkit.losses.queue_infonce import QueueInfoNCELoss


class MoCoV2Head(MomentumProjectorHead):
    """MoCo v2 (Chen et al., 2020, arXiv 2003.04297): momentum key encoder and a queue of keys.

    Query q = g(f(x_1)) from the backbone f and projector g; key k = g_m(f_m(x_2)) from momentum
    copies, updated after every optimizer step as theta_m <- m theta_m + (1 - m) theta (MoCo Eq. 2).
    ``SSLModule`` keeps f_m (``uses_teacher``); this head keeps g_m (``MomentumProjectorHead``), the
    queue and the loss (``QueueInfoNCELoss``), one query / key direction at a time (``pair_loss``,
    the hook that MoCHi and Feature Transformation override)::

        L = CE([q.k+ | q.queue] / t, 0)                                   (MoCo Eq. 1)

    Defaults are solo-learn's MoCo V2+: symmetric (both views serve as query, the two losses are
    averaged, both keys enqueued), momentum 0.99 -> 1.0 on BYOL's cosine schedule, t = 0.2,
    queue 65536. The queue (K, D) is a persistent buffer of unit rows; keys are gathered from every
    process before the enqueue, so all processes hold the queue of a 1-process run on the global
    batch (declared in ``identical_buffers``, so DDP does not broadcast the queue before every
    forward: ``ssl_toolkit.process_state``); the write pointer wraps, so K need not divide the global
    batch. No shuffle-BN (set
    ``trainer.sync_batchnorm`` under DDP). Departures and reference numbers: ``docs/methods/mocov2.md``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers, batch_norm: projector (MoCo v2: 2048 -> 128, no BN).
        queue_size: K, keys kept as negatives.
        temperature: t > 0.
        base_momentum, final_momentum: momentum m at the first and the last step, in [0, 1];
            ``final_momentum = base_momentum`` gives MoCo's constant momentum.
        symmetric: both views as queries (``False``: the original MoCo v2, x_1 query, x_2 key).
        exclude_own_keys: drop queue entries of the current images from their negatives (matters when
            the queue holds more keys than the data set has images).
        per_view_queues: one queue of K keys per view (solo-learn ``mocov2plus.py``: a (2, D, K)
            queue; q1 is scored against past x_2 keys, q2 against past x_1 keys, so each view keeps
            K keys); ``False`` keeps one queue of the K newest keys of both views. Needs ``symmetric``.

    Raises:
        ValueError: ``queue_size < 1``, a momentum outside [0, 1], or ``per_view_queues`` without
            ``symmetric``.

    Shapes:
        views.feats / views.teacher: >= 2 tensors (B, F); the first two are x_1, x_2.
    """

    # The same on every process by construction (gathered keys): DDP does not broadcast them.
    identical_buffers = ("queue", "queue_index", "queue_ptr")

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
        queue_size: int = 65536,
        temperature: float = 0.2,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
        symmetric: bool = True,
        exclude_own_keys: bool = True,
        per_view_queues: bool = False,
    ) -> None:
        check_int("queue_size", queue_size)
        if per_view_queues and not symmetric:
            raise ValueError("per_view_queues: needs symmetric=True (one queue per query view)")
        projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm)
        super().__init__(projector, base_momentum, final_momentum)
        self.loss = QueueInfoNCELoss(temperature)
        self.symmetric, self.exclude_own_keys = symmetric, exclude_own_keys
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.per_view_queues = per_view_queues
        if per_view_queues:  # ``queue`` then holds the x_1 keys, ``queue_view2`` the x_2 keys
            self.register_buffer("queue_view2", F.normalize(torch.randn(queue_size, out_dim), dim=1))

    def pair_loss(
        self, q: Tensor, k: Tensor, queue: Tensor, exclude: Tensor | None, batch: BatchInfo
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one query / key direction: q (B, D) against its keys k (B, D) and the queue
        (K, D) without the rows ``exclude`` (B, K) marks. The hook that variants override (MoCHi's
        mixing, Feature Transformation); ``forward`` averages it over the two directions."""
        return self.loss(q, k, queue, exclude=exclude)

    @torch.no_grad()
    def enqueue(self, keys: list[Tensor], index: Tensor) -> None:
        """Write this step's keys (one (B, D) tensor per view) of samples ``index`` (B,) at the
        pointer, wrapping around. Each view's keys are gathered from every process (rank order), so
        the queue is the same on every process and equal to a 1-process run on the global batch;
        with more keys than K only the last K are kept."""
        index = gather_no_grad(index)
        gathered = [gather_no_grad(k.detach()) for k in keys]
        # One queue: the views' keys one after the other; per view: view v's keys into queue v.
        if self.per_view_queues:
            parts = [(self.queue, gathered[0]), (self.queue_view2, gathered[1])]
        else:
            parts = [(self.queue, torch.cat(gathered))]
        size = self.queue.shape[0]
        for queue, rows in parts:
            rows = rows[-size:]
            slots = (self.queue_ptr + torch.arange(rows.shape[0], device=rows.device)) % size
            queue[slots] = F.normalize(rows.float(), dim=1).to(queue.dtype)
        index = index.repeat(parts[0][1].shape[0] // index.shape[0])[-size:]
        self.queue_index[slots] = index.to(self.queue_index.device)
        self.queue_ptr.copy_((self.queue_ptr + index.shape[0]) % size)

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2 or views.teacher is None or len(views.teacher) < 2:
            raise ValueError(
                f"{type(self).__name__} needs 2 views and the momentum backbone's features (views.teacher)"
            )
        q1, q2 = self.projector(torch.cat(views.feats[:2])).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projector(torch.cat(views.teacher[:2])).chunk(2)
        exclude = None
        if self.exclude_own_keys:
            exclude = self.queue_index[None, :] == batch.index[:, None].to(self.queue_index.device)  # (B, K)
        queue = self.queue.clone()  # the enqueue below writes the buffer in place
        queue2 = self.queue_view2.clone() if self.per_view_queues else queue  # q1's negatives: past x_2 keys
        loss, logs = self.pair_loss(q1, k2, queue2, exclude, batch)
        if self.symmetric:
            loss2, logs2 = self.pair_loss(q2, k1, queue, exclude, batch)
            loss = (loss + loss2) / 2
            logs = {key: (value + logs2[key]) / 2 for key, value in logs.items()}
            self.enqueue([k1, k2], batch.index)
        else:
            self.enqueue([k2], batch.index)
        logs["z_std"] = embedding_spread(q1)
        return HeadOutput(loss=loss, logs=logs)


class MoCHiHead(MoCoV2Head):
    """MoCHi (Kalantidis et al., NeurIPS 2020, arXiv 2010.01028): MoCo v2 plus hard-negative mixing.

    Adds to ``MoCoV2Head`` only the mixing: per query, ``num_mixed`` mixtures of pairs of its
    ``num_hard`` hardest queue negatives and ``num_query_mixed`` mixtures of the query with one of
    them (``MoCHiLoss``), from optimizer step ``mix_start_step`` on (before that the queue is still
    noise and the loss is plain MoCo v2)::

        L = CE([q.k+ | q.queue | q.H | q.H'] / t, 0)                      (MoCHi Sec. 4)

    Args:
        in_dim ... exclude_own_keys: as ``MoCoV2Head``.
        num_hard, num_mixed, num_query_mixed, max_query_weight: MoCHi's N, s, s', and the bound w of
            beta (see ``MoCHiLoss``); ``num_hard=0`` is MoCo v2.
        mix_start_step: optimizer steps before mixing starts (>= 0). The paper's warm-up is
            unverified; see ``docs/methods/mochi.md``.

    Raises:
        ValueError: as ``MoCoV2Head``, or ``mix_start_step < 0``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
        queue_size: int = 65536,
        temperature: float = 0.2,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
        symmetric: bool = True,
        exclude_own_keys: bool = True,
        num_hard: int = 1024,
        num_mixed: int = 1024,
        num_query_mixed: int = 256,
        max_query_weight: float = 0.5,
        mix_start_step: int = 0,
    ) -> None:
        super().__init__(
            in_dim,
            hidden_dim,
            out_dim,
            num_layers,
            batch_norm,
            queue_size,
            temperature,
            base_momentum,
            final_momentum,
            symmetric,
            exclude_own_keys,
        )
        if mix_start_step < 0:
            raise ValueError(f"mix_start_step: must be >= 0, got {mix_start_step}")
        self.loss = MoCHiLoss(temperature, num_hard, num_mixed, num_query_mixed, max_query_weight)
        self.mix_start_step = mix_start_step

    def mixing(self, step: int) -> bool:
        """Whether the loss mixes hard negatives at optimizer step ``step``."""
        return step >= self.mix_start_step and self.loss.num_hard > 0

    def pair_loss(
        self, q: Tensor, k: Tensor, queue: Tensor, exclude: Tensor | None, batch: BatchInfo
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``MoCHiLoss`` with mixing from ``mix_start_step`` on; logs ``mixing`` (0 or 1)."""
        mix = self.mixing(batch.step)
        loss, logs = self.loss(q, k, queue, mix=mix, exclude=exclude, generator=batch.generator)
        logs["mixing"] = logs["pos_sim"].new_zeros((), dtype=torch.float32) + float(mix)  # no H2D copy
        return loss, logs
