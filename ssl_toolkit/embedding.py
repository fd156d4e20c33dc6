"""Embed evaluation batches (as they are, or as seeded augmented views) and whole splits, and gather
them across processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from ssl_toolkit.distributed import is_distributed


@dataclass
class EmbeddedSplit:
    """Features of one split, rows sorted by sample index.

    Attributes:
        feats: (N, F) backbone features.
        proj: (N, D) projector embeddings, or None when not asked for.
        labels: (N,) int64 labels.
        index: (N,) int64 sample indices within the split (unique, ascending).
    """

    feats: Tensor
    proj: Tensor | None
    labels: Tensor
    index: Tensor

    def rows(self, index: Tensor) -> EmbeddedSplit:
        """The rows at positions ``index`` (a subset, e.g. RankMe's random sample)."""
        proj = self.proj[index] if self.proj is not None else None
        return EmbeddedSplit(self.feats[index], proj, self.labels[index], self.index[index])


def chunk_generator(seed: int, first_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one chunk's views, on ``device`` (the module's: the views are drawn where
    they are made): seeded by ``SeedSequence([seed, first_index])``."""
    state = np.random.SeedSequence([int(seed), int(first_index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))


class EvalBatch(NamedTuple):
    """One batch of an evaluation loader: which images, and how the module embeds them.

    Every validation batch reads as one (``EvalBatch(*batch)``: a plain ``(images, labels, index)``
    batch has views 0), so ``SSLModule.validation_step`` embeds each the same way, whoever asked.

    Attributes:
        images: uint8 (B, 3, S, S).
        labels: (B,) int64, -1 where unknown.
        index: (B,) int64 positions in the loader's split.
        views: 0 = the images as they are (``module.embed``: features (B, F)); V > 0 = V views of the
            module's training augmentation (``module.embed_views``: features (B, V, F)), drawn from
            :func:`chunk_generator` (``seed``, ``index[0]``), so such a batch is one whole fixed
            chunk (``ssl_toolkit.callbacks.chunks``).
        seed: seed of the views (unused with views 0).
    """

    images: Tensor
    labels: Tensor
    index: Tensor
    views: int = 0
    seed: int = 0

    def embed(self, module: Any) -> Tensor:
        """Backbone features of this batch: (B, F) for views 0, else (B, V, F), float32, no gradient.

        Args:
            module: an ``SSLModule`` (``embed``, ``embed_views``), in the mode the caller wants (eval).
        """
        if self.views == 0:
            return module.embed(self.images)
        generator = chunk_generator(self.seed, int(self.index[0]), module.device)
        return module.embed_views(self.images, self.views, generator)


@torch.no_grad()
def embed_split(module: torch.nn.Module, loader: DataLoader, with_proj: bool = False) -> EmbeddedSplit:
    """Run ``module.embed`` (and ``module.project`` if ``with_proj``) over ``loader`` in eval mode.

    ``loader`` yields ``(uint8 images, labels, index)``. Features stay on the module's device; the
    module's train/eval mode is restored afterwards. Under torch.distributed, pass a loader with a
    ``DistributedSampler`` and call :func:`gather_split` on the result.
    """
    was_training = module.training
    module.eval()
    feats, projs, labels, index = [], [], [], []
    try:
        for images, y, idx in loader:
            f = module.embed(images)
            feats.append(f)
            if with_proj:
                projs.append(module.project(f))
            labels.append(torch.as_tensor(y).to(f.device))
            index.append(torch.as_tensor(idx).to(f.device))
    finally:
        module.train(was_training)
    if not feats:
        raise ValueError("loader: yielded no batches")
    return EmbeddedSplit(torch.cat(feats), torch.cat(projs) if with_proj else None, torch.cat(labels), torch.cat(index))


def gather_split(split: EmbeddedSplit) -> EmbeddedSplit:
    """All-gather a split embedded in shards by every process; drop the duplicate rows that a
    padding ``DistributedSampler`` adds, and sort by sample index, so every process ends with the
    same rows as one process embedding the whole split. A no-op without torch.distributed.

    Features keep their dtype; labels and sample indices are gathered as int64 tensors of their
    own (exact for any index, not only below 2**24 as a float32 column would be).
    """
    if is_distributed():
        split = EmbeddedSplit(
            feats=_all_gather_rows(split.feats),
            proj=_all_gather_rows(split.proj) if split.proj is not None else None,
            labels=_all_gather_rows(split.labels.long()),
            index=_all_gather_rows(split.index.long()),
        )
    # Unique sorted indices; keep the first occurrence of each (padding repeats rows).
    order = torch.argsort(split.index, stable=True)
    idx = split.index[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return split.rows(order[keep])


def _all_gather_rows(local: Tensor) -> Tensor:
    """Concatenate every process's (n_r, ...) tensor in rank order; the n_r may differ."""
    count = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    most = int(max(int(c) for c in counts))
    padded = local.new_zeros((most, *local.shape[1:]))
    padded[: local.shape[0]] = local
    chunks = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([c[: int(n)] for c, n in zip(chunks, counts)])
