"""SwAV head: projector -> L2-normalize -> prototypes, Sinkhorn codes, optional queue."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.local_queue import ProcessLocalQueue
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.sinkhorn import sinkhorn
from ssl_toolkit.losses.swav import SwAVLoss


class SwAVHead(SSLHead):
    """SwAV (Caron et al. 2020, arXiv 2006.09882): swapped prediction of online cluster codes.

    z = normalize(g(h)) (B, D); scores p = z Cᵀ against K unit-norm prototypes C (a bias-free
    Linear, so scores are cosines; ``prototype_bias`` adds lightly's per-prototype offset); codes
    q = sinkhorn(p) of the first ``num_global`` crops only (Eq. 3, ε and iterations below, sums
    all-reduced across processes); the loss predicts each code from every other crop
    (``SwAVLoss``, Eq. 1-2, temperature τ).

    * Prototypes are re-normalized after every optimizer step (``after_step``) and at
      construction, so the forward pass always sees unit rows; their gradient is dropped
      (``grad = None``, as ``main_swav.py``) while ``step < freeze_prototypes_steps``.
    * Queue (``queue_length`` > 0): per process and per code crop, the last ``queue_length``
      normalized embeddings. Filled from epoch ``queue_start_epoch``, used only once full: its
      rows are scored with the *current* prototypes and prepended to the batch for Sinkhorn; the
      batch rows' codes are kept. A ``ProcessLocalQueue``: every process's queue is in checkpoints
      and each process gets its own back on resume; not a registered buffer, which DDP would
      overwrite with rank 0's before every forward.

    Logs (per process, no host sync): ``loss_over_lnK`` (1 at collapse, SwAV README),
    ``code_max`` (mean over samples of the largest code entry: 1/K for uniform codes, 1 for hard
    ones), ``code_entropy`` (entropy of the batch-mean code, at most ln K), ``prototypes_used``
    (distinct argmax of the codes), ``queue_used`` (0/1) and ``z_std``. Two collapses look
    different: all embeddings alike gives uniform codes (loss_over_lnK -> 1, code_max -> 1/K,
    z_std -> 0); all samples in a few clusters gives code_entropy << ln K, few prototypes used.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim: projector hidden width (SwAV: 2048).
        out_dim: embedding width D (SwAV: 128).
        num_layers: Linear layers in the projector.
        batch_norm: BN in the projector's hidden layers (SwAV: yes).
        last_norm: norm on the projector's output (``build_mlp``; SwAV: ``none``).
        bias: bias on Linear layers without a BN after them (SwAV: yes).
        num_prototypes: K (SwAV: 3000). Keep K > out_dim: otherwise the embeddings can move into
            the prototypes' orthogonal complement, where every score is 0 and the loss sits at ln K.
        prototype_bias: a learned offset b (K,) on the scores, p = z Cᵀ + b (lightly 1.6's
            ``SwaVPrototypes``; the authors' prototypes have none, so the default is False).
        temperature: τ of the swapped prediction (SwAV: 0.1).
        epsilon: Sinkhorn ε (SwAV: 0.05).
        sinkhorn_iterations: Sinkhorn iterations (SwAV: 3).
        num_global: code crops G: the first G views (the global crops; SwAV: 2).
        freeze_prototypes_steps: optimizer steps with frozen prototypes (SwAV: 5005 at batch 256).
        queue_length: queue rows per process and code crop; 0 disables the queue.
        queue_start_epoch: epoch from which the queue is filled (SwAV at batch 256: 15).

    Shapes:
        views.feats: V >= max(2, G) tensors (B, F), global crops first. Returns a scalar loss.

    Example:
        >>> head = SwAVHead(in_dim=512, num_prototypes=3000, num_global=2)
        >>> batch = BatchInfo(labels=torch.arange(8) % 4, index=torch.arange(8), step=0, epoch=0)
        >>> out = head(Views([torch.randn(8, 512) for _ in range(8)]), batch)
        >>> out.loss.backward()
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_norm: str = "none",
        bias: bool = True,
        num_prototypes: int = 3000,
        prototype_bias: bool = False,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        num_global: int = 2,
        freeze_prototypes_steps: int = 0,
        queue_length: int = 0,
        queue_start_epoch: int = 0,
    ) -> None:
        super().__init__()
        minimum = {"num_prototypes": (num_prototypes, 2), "num_global": (num_global, 1),
                   "sinkhorn_iterations": (sinkhorn_iterations, 1), "queue_length": (queue_length, 0),
                   "freeze_prototypes_steps": (freeze_prototypes_steps, 0),
                   "queue_start_epoch": (queue_start_epoch, 0)}  # fmt: skip
        for name, (value, low) in minimum.items():
            if value < low:
                raise ValueError(f"{name}: must be >= {low}, got {value}")
        if not epsilon > 0:
            raise ValueError(f"epsilon: must be > 0, got {epsilon}")
        # facebookresearch/swav src/resnet50.py: Linear -> BN -> ReLU -> Linear (docs/methods/swav.md)
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias)
        self.prototypes = nn.Linear(out_dim, num_prototypes, bias=prototype_bias)
        self.loss = SwAVLoss(temperature)
        self.epsilon, self.sinkhorn_iterations = float(epsilon), int(sinkhorn_iterations)
        self.num_global, self.freeze_prototypes_steps = int(num_global), int(freeze_prototypes_steps)
        self.queue_start_epoch = int(queue_start_epoch)
        self.queue = ProcessLocalQueue(num_global, queue_length, out_dim)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype row back onto the unit sphere."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def after_backward(self, step: int) -> None:
        if step < self.freeze_prototypes_steps:
            for param in self.prototypes.parameters():  # weight (and bias): no update, decay or momentum
                param.grad = None

    def after_step(self, step: int, total_steps: int) -> None:
        self.normalize_prototypes()

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, D) unit-norm embeddings, the space the prototypes score."""
        return F.normalize(self.projector(feats), dim=1)

    def scores(self, z: Tensor) -> Tensor:
        """Unit embeddings (N, D) -> scores (N, K): cosines with the prototypes (plus the offset
        with ``prototype_bias``), in fp32 even under autocast."""
        bias = self.prototypes.bias
        with torch.autocast(device_type=z.device.type, enabled=False):
            return F.linear(z.float(), self.prototypes.weight.float(), None if bias is None else bias.float())

    @torch.no_grad()
    def assign(self, scores: Tensor, crop: int) -> Tensor:
        """Codes (B, K) of code crop ``crop`` from its scores (B, K), with the queue once full."""
        offset = 0
        if self.queue.full:
            queue = self.queue.rows(scores.device)[crop]  # (L, D)
            offset = queue.shape[0]
            scores = torch.cat([self.scores(queue), scores])  # (L + B, K)
        return sinkhorn(scores, self.sinkhorn_iterations, self.epsilon)[offset:]

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        num_views, g = len(views.feats), self.num_global
        if num_views < max(2, g):
            raise ValueError(f"SwAVHead needs at least 2 and num_global={g} views, got {num_views}")
        b = views.feats[0].shape[0]
        z = self.embed(torch.cat(views.feats))  # (V*B, D); BN statistics over all crops
        p = self.scores(z).chunk(num_views)  # V x (B, K)
        queue_used = self.queue.full
        codes = [self.assign(p[a], a) for a in range(g)]  # G x (B, K)
        if self.queue.length > 0 and batch.epoch >= self.queue_start_epoch:
            self.queue.push(z[: g * b].detach().unflatten(0, (g, b)))
        loss = self.loss(list(p), codes)
        return HeadOutput(loss=loss, logs=self._logs(loss, torch.cat(codes), z[:b], queue_used))

    @torch.no_grad()
    def _logs(self, loss: Tensor, codes: Tensor, z: Tensor, queue_used: bool) -> dict[str, Tensor]:
        k = codes.shape[1]
        mean_code = codes.mean(dim=0)  # (K,)
        used = torch.zeros(k, device=codes.device).index_fill_(0, codes.argmax(dim=1), 1.0).sum()
        return {
            "loss_over_lnK": loss.detach() / math.log(k),
            "code_max": codes.max(dim=1).values.mean(),
            "code_entropy": -(mean_code * mean_code.clamp_min(1e-12).log()).sum(),
            "prototypes_used": used,
            "queue_used": codes.new_zeros((), dtype=torch.float32) + float(queue_used),  # no H2D copy
            "z_std": embedding_spread(z),
        }
