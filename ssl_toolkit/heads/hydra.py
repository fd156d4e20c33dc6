"""Hydra / SimLAP head: projector, class-pair gate network and the gated multi-positive loss."""

from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor, nn

from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.heads.mlp import build_mlp
from ssl_toolkit.losses.hydra import HydraLoss
from ssl_toolkit.losses.ntxent import NTXentLoss

PAIRINGS = ("arbitrary", "distinct", "identical")
COMBINES = ("mean", "product")


class PairGate(nn.Module):
    """Gate g(y1, y2) in (0, 1)^D for a class pair (the authors' ``BasicGate``).

    ``combine="mean"``: g = sigmoid(MLP((E[y1] + E[y2]) / 2)); ``"product"``: g = sigmoid(MLP(E[y1]))
    * sigmoid(MLP(E[y2])). E is a label embedding (C, label_dim); the MLP is ReLU -> BN -> Linear
    -> ReLU -> BN -> Linear, as in the code (512 -> 1024 -> D there).

    Shapes: y1, y2 (N,) int64 -> (N, D).
    """

    def __init__(
        self, num_classes: int, out_dim: int, label_dim: int = 512, hidden_dim: int = 1024, combine: str = "mean"
    ) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"gate_combine: {combine!r} is not one of {', '.join(COMBINES)}")
        self.combine = combine
        self.embedding = nn.Embedding(num_classes, label_dim)
        self.mlp = nn.Sequential(
            nn.ReLU(), nn.BatchNorm1d(label_dim), nn.Linear(label_dim, hidden_dim),
            nn.ReLU(), nn.BatchNorm1d(hidden_dim), nn.Linear(hidden_dim, out_dim),
        )  # fmt: skip

    def forward(self, y1: Tensor, y2: Tensor) -> Tensor:
        if self.combine == "mean":
            return self.mlp((self.embedding(y1) + self.embedding(y2)) / 2).sigmoid()
        return self.mlp(self.embedding(y1)).sigmoid() * self.mlp(self.embedding(y2)).sigmoid()


class HydraHead(SSLHead):
    """Hydra (Wu et al., "Rethinking Positive Pairs in Contrastive Learning", arXiv 2410.18200; named
    SimLAP in v2): learn from *arbitrary class pairs* as positives in a gated subspace.

    **Uses class labels** (weakly supervised, not label-free SSL): ``uses_labels`` makes the recipe
    builder refuse data without labels, and batches should hold several samples per class (the data
    section's ``classes_per_batch``, a P x K class-balanced batch sampler), so that positives exist.

    Each sample i of class y1_i gets a partner class y2_i (``pairing``): ``arbitrary`` takes the class
    of a randomly permuted in-batch sample (so positives exist), ``distinct`` draws
    (y1 + U{1..C-1}) mod C (positives may be absent), ``identical`` uses y2 = y1 (SupCon with a
    class-conditioned gate). The gate g(y1, y2) (``PairGate``) selects dimensions of the projection
    z = LN(MLP(h)) in which every sample of class y2 is a positive of i (``HydraLoss``). An optional
    plain SimCLR term (NT-Xent on the ungated projections) is added with ``simclr_weight``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        num_classes: C (filled in by the recipe builder from the data).
        hidden_dim: projector hidden width (code: 2048).
        out_dim: projection / gate width D (code: 256).
        num_layers: Linear layers in the projector (code: 2).
        batch_norm: BN in the projector's hidden layers (code: yes).
        layer_norm: LayerNorm on the projection (code's ``last_norm='ln'``).
        bias: bias on Linear layers without a BN after them (code: none on the output Linear).
        pairing: ``arbitrary`` (default, the paper's setting), ``distinct`` or ``identical``.
        temperature: initial τ of the learnable scale s = 1 / τ (code: 0.1).
        learn_scale: learn s (code: yes).
        label_dim, gate_hidden_dim: label embedding and gate MLP widths (code: 512, 1024).
        gate_combine: ``mean`` of the two label embeddings (code default) or ``product`` of gates.
        simclr_weight: weight of the optional NT-Xent term (0 = off, the code's setting).
        simclr_temperature: its temperature.

    Shapes:
        views.feats: V >= 2 tensors (B, F); batch.labels (B,) int64 >= 0. Returns HeadOutput with a
        scalar loss and logs ``gate_mean`` (mean gate value), ``gate_open`` (fraction of gate
        entries > 0.5), ``gate_entropy`` (mean Bernoulli entropy, nats), ``scale``, ``z_std``
        (and ``hydra``, ``simclr`` with the NT-Xent term).

    Example:
        >>> head = HydraHead(in_dim=512, num_classes=10, out_dim=128)
        >>> batch = BatchInfo(labels=torch.arange(8) % 4, index=torch.arange(8), step=0, epoch=0)
        >>> out = head(Views([torch.randn(8, 512), torch.randn(8, 512)]), batch)
        >>> out.loss.backward()
    """

    uses_labels = True

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 2048,
        out_dim: int = 256,
        num_layers: int = 2,
        batch_norm: bool = True,
        layer_norm: bool = True,
        bias: bool = False,
        pairing: str = "arbitrary",
        temperature: float = 0.1,
        learn_scale: bool = True,
        label_dim: int = 512,
        gate_hidden_dim: int = 1024,
        gate_combine: str = "mean",
        simclr_weight: float = 0.0,
        simclr_temperature: float = 0.2,
    ) -> None:
        super().__init__()
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing: {pairing!r} is not one of {', '.join(PAIRINGS)}")
        if num_classes < 2:
            raise ValueError(f"num_classes: Hydra needs at least 2 classes, got {num_classes}")
        if simclr_weight < 0:
            raise ValueError(f"simclr_weight: must be >= 0, got {simclr_weight}")
        self.num_classes, self.pairing, self.simclr_weight = num_classes, pairing, simclr_weight
        # erow/FastSSL layers/operation.py build_head(2, F, 2048, 256, last_norm='ln') (docs/methods/hydra.md)
        last_norm = "ln" if layer_norm else "none"
        self.projector = build_mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_norm, bias)
        self.gate = PairGate(num_classes, out_dim, label_dim, gate_hidden_dim, gate_combine)
        self.loss = HydraLoss(temperature=temperature, learn_scale=learn_scale)
        self.simclr = NTXentLoss(temperature=simclr_temperature) if simclr_weight > 0 else None

    def embed(self, feats: Tensor) -> Tensor:
        """Ungated projection (B, F) -> (B, D)."""
        return self.projector(feats)

    def partner_classes(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y2 for every sample (B,), as set by ``pairing``, drawn from ``generator`` (on ``y``'s
        device; None: the process's global generator of that device)."""
        if self.pairing == "identical":
            return y
        if self.pairing == "arbitrary":
            return y[torch.randperm(y.shape[0], device=y.device, generator=generator)]
        shift = torch.randint(1, self.num_classes, y.shape, device=y.device, generator=generator)
        return (y + shift) % self.num_classes

    @torch.no_grad()
    def pair_gates(self) -> Tensor:
        """Gates of every class pair (C, C, D), computed in eval mode (BN running statistics)."""
        was_training = self.gate.training
        self.gate.eval()
        classes = torch.arange(self.num_classes, device=self.gate.embedding.weight.device)
        y1, y2 = torch.meshgrid(classes, classes, indexing="ij")
        gates = self.gate(y1.reshape(-1), y2.reshape(-1)).reshape(self.num_classes, self.num_classes, -1)
        self.gate.train(was_training)
        return gates

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2:
            raise ValueError(f"HydraHead needs at least 2 views, got {len(views.feats)}")
        y1 = batch.labels
        # The recipe builder already refuses label-free data; this per-batch check would be a host
        # sync on an accelerator, so it only runs where it is free (CPU tensors).
        if y1.device.type == "cpu" and (bool((y1 < 0).any()) or bool((y1 >= self.num_classes).any())):
            raise ValueError(f"HydraHead needs class labels in [0, {self.num_classes}), got {y1.tolist()[:8]}...")
        y2 = self.partner_classes(y1, batch.generator)
        gate = self.gate(y1, y2)  # (B, D)
        num_views = len(views.feats)
        z = self.projector(torch.cat(views.feats)).chunk(num_views)  # one call, split per view
        pairs = list(combinations(range(num_views), 2))
        hydra = torch.stack([self.loss(z[i], z[j], gate, y1, y2) for i, j in pairs]).mean()
        logs = gate_statistics(gate)
        logs.update(scale=self.loss.scale.detach(), z_std=embedding_spread(z[0]))
        loss = hydra
        if self.simclr is not None:
            simclr = torch.stack([self.simclr(z[i], z[j]) for i, j in pairs]).mean()
            loss = hydra + self.simclr_weight * simclr
            logs.update(hydra=hydra.detach(), simclr=simclr.detach())
        return HeadOutput(loss=loss, logs=logs)


@torch.no_grad()
def gate_statistics(gate: Tensor) -> dict[str, Tensor]:
    """Mean gate value, fraction of entries > 0.5 and mean Bernoulli entropy (nats) of (N, D) gates."""
    g = gate.float().clamp(1e-6, 1 - 1e-6)
    entropy = -(g * g.log() + (1 - g) * (1 - g).log())
    return {"gate_mean": g.mean(), "gate_open": (g > 0.5).float().mean(), "gate_entropy": entropy.mean()}
