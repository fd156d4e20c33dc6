"""The head contract: what SSLModule hands a head, and what a head hands back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Views:
    """Backbone features of the augmented views of one batch.

    Attributes:
        feats: one (B, F) tensor per view, global views first, then local crops.
        teacher: the same for an EMA teacher backbone, when the head asks for one (else None).
    """

    feats: list[Tensor]
    teacher: list[Tensor] | None = None


@dataclass(frozen=True)
class BatchInfo:
    """What else a head may need about the batch: labels (B,), sample indices (B,), progress, and
    the generator of its random draws (on the features' device; None: the process's global
    generator, seeded per process by ``fit``, see ``ssl_toolkit.rng``)."""

    labels: Tensor
    index: Tensor
    step: int
    epoch: int
    generator: torch.Generator | None = None


@dataclass
class HeadOutput:
    """The loss to minimise and tensors to log (logged as ``train/<key>``, never synced per step)."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class SSLHead(nn.Module):
    """Base class of every head: projector(s), prototypes, queues... plus the loss call.

    Subclasses implement ``forward(views, batch) -> HeadOutput``. ``in_dim`` (the backbone's
    feature width) is passed by the recipe builder, never written in a recipe.

    Optional hooks, called by ``SSLModule``:

    * ``uses_teacher = True``: the module keeps an EMA copy of the backbone, runs it without gradient
      on the global views (those at the first view's resolution) and passes the features as
      ``views.teacher``; after every optimizer step it moves the copy towards the backbone with
      momentum ``teacher_momentum(step, total_steps)``.
    * ``after_backward(step)``: gradients exist, the optimizer has not stepped (e.g. SwAV zeroes the
      prototypes' gradient while they are frozen).
    * ``after_step(step, total_steps)``: after each optimizer step (EMA projector, prototype
      re-normalization). ``step`` counts optimizer steps done before this one.
    * ``uses_labels = True``: the head reads ``batch.labels`` (weak supervision); the recipe builder
      refuses data without labels.

    Builder conventions (``ssl_toolkit.recipe.build.build_parts``; the contract tests in
    ``tests/contracts/test_heads_contract.py`` build heads the same way):

    * ``in_dim`` is always the backbone's feature width F (``SSLModule.feature_dim``); a recipe
      never writes it.
    * ``num_classes``, when the constructor has that keyword, is the data's number of classes; a
      recipe never writes it either.
    * a keyword named ``loss`` whose recipe value is a mapping ``{name: ..., **kwargs}`` is built
      from ``ssl_toolkit.losses.LOSSES`` and passed as the module; every other keyword is passed
      as written.
    """

    uses_teacher: bool = False
    uses_labels: bool = False
    # ``embed`` returns this many equal-width embeddings side by side, each scored as its own
    # similarity space by the diagnostics (AMCL: one per projection head).
    embed_parts: int = 1

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} sets uses_teacher but has no teacher_momentum")

    def after_backward(self, step: int) -> None:
        """Called after ``loss.backward()``, before the optimizer step."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step."""

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, feats: Tensor) -> Tensor:
        """Projector output for backbone features (B, F) -> (B, D); used by evaluation callbacks."""
        raise NotImplementedError


@torch.no_grad()
def embedding_spread(z: Tensor) -> Tensor:
    """Mean per-dimension std of unit-normalized embeddings (B, D): about 1/sqrt(D) when spread
    out, 0 under collapse. Detached; logged by the heads as ``z_std``."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()
