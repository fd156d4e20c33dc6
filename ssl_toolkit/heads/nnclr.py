"""NNCLR head: projector, predictor and a support set of past projections. Method page: docs/methods/nnclr.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.checks import check_int
from ssl_toolkit.distributed import gather_no_grad
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.nnclr import NNCLRLoss


class NNCLRHead(SSLHead):
    """NNCLR (Dwibedi et al., ICCV 2021, arXiv 2104.14548): the nearest neighbour of a view's
    projection in a support set of past projections is the positive of the other view's prediction.

    z = g(h) (projector), p = q(z) (predictor), per view; NN(z) = the support-set row of highest
    cosine with z (Eq. 2, no gradient); loss = (L(NN(z_1), p_2) + L(NN(z_2), p_1)) / 2 with
    ``NNCLRLoss`` (Eq. 1, predictions of the global batch as keys). After the loss the support set
    (a persistent (K, D) buffer of unit rows, FIFO) receives the first view's normalized
    projections of every process (gathered, rank order), so every process keeps the support set of
    a 1-process run on the global batch: solo-learn's ``nnclr.py``. The write pointer wraps, so K
    need not divide the global batch.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, out_dim, num_layers, batch_norm, last_norm: projector (solo-learn: 2048 -> 256,
            3 layers, BN, BN on the output: ``bn_affine``).
        pred_hidden_dim, pred_batch_norm: predictor out_dim -> pred_hidden_dim -> out_dim (solo-learn: 4096, BN).
        queue_size: K, support-set rows (paper: 98304; solo-learn: 65536).
        temperature: t of the loss (paper: 0.1; solo-learn ImageNet-100: 0.2).
        same_view_negatives: lightly 1.6's NT-Xent form of the loss (see ``NNCLRLoss``).

    Raises:
        ValueError: a bad argument (naming the keyword); at forward, fewer than 2 views.

    Shapes:
        views.feats: V >= 2 tensors (B, F); the first two are used. ``embed``: (B, out_dim).
        Logs ``z_std``.
    """

    # Filled with the keys of every process in the same order: the same on every process, so DDP
    # need not broadcast it before each forward (ssl_toolkit.process_state).
    identical_buffers = ("queue", "queue_ptr")

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = True,
        last_norm: str = "bn_affine",
        pred_hidden_dim: int = 4096,
        pred_batch_norm: bool = True,
        queue_size: int = 65536,
        temperature: float = 0.1,
        same_view_negatives: bool = False,
    ) -> None:
        super().__init__()
        check_int("queue_size", queue_size)
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm)
        self.predictor = build_mlp(out_dim, pred_hidden_dim, out_dim, 2, pred_batch_norm, "none")
        self.loss = NNCLRLoss(temperature, same_view_negatives)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, out_dim): the projector's output, the space of the support set."""
        return self.projector(feats)

    @torch.no_grad()
    def nearest_neighbour(self, z: Tensor) -> Tensor:
        """(N, D) projections -> (N, D): each one's support-set row of highest cosine (Eq. 2)."""
        scores = F.normalize(z.float(), dim=1) @ self.queue.float().T  # (N, K)
        return self.queue[scores.argmax(dim=1)]

    @torch.no_grad()
    def enqueue(self, z: Tensor) -> None:
        """Write the normalized (N, D) projections of every process at the pointer, wrapping
        around; with more rows than K only the last K are kept."""
        rows = F.normalize(gather_no_grad(z.detach()).float(), dim=1)
        size = self.queue.shape[0]
        rows = rows[-size:]
        slots = (self.queue_ptr + torch.arange(rows.shape[0], device=rows.device)) % size
        self.queue[slots] = rows.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + rows.shape[0]) % size)

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2:
            raise ValueError(f"NNCLRHead needs at least 2 views, got {len(views.feats)}")
        z1, z2 = self.projector(views.feats[0]), self.projector(views.feats[1])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        nn1, nn2 = self.nearest_neighbour(z1), self.nearest_neighbour(z2)
        loss = (self.loss(nn1, p2) + self.loss(nn2, p1)) / 2
        self.enqueue(z1)
        return HeadOutput(loss=loss, logs={"z_std": embedding_spread(z1)})
