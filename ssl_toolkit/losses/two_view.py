"""Logits of every local anchor against every (gathered) key, for two-view contrastive losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.distributed import gather_with_grad, rank


@dataclass
class TwoViewLogits:
    """Similarities of the 2N local anchors (view a then view b) with the 2WN gathered keys.

    Attributes:
        logits: (2N, 2WN) s_ik / temperature in fp32; keys are [all of view a | all of view b].
        anchors: (2N, D) the normalized local projections [view a | view b].
        keys: (2WN, D) the normalized gathered projections [view a | view b].
        self_cols: (2N,) column of each anchor itself.
        pos_cols: (2N,) column of each anchor's positive (the other view of its image).
    """

    logits: Tensor
    anchors: Tensor
    keys: Tensor
    self_cols: Tensor
    pos_cols: Tensor

    def positives(self) -> Tensor:
        """(2N,) s_{i,p(i)} / temperature."""
        return self.logits.gather(1, self.pos_cols[:, None]).squeeze(1)

    def _at(self, cols: Tensor) -> Tensor:
        # A comparison, not F.one_hot: one_hot reads the indices' range back to the host on the CPU.
        return cols[:, None] == torch.arange(self.logits.shape[1], device=cols.device)

    def is_self(self) -> Tensor:
        """(2N, 2WN) bool, True at each anchor's own column."""
        return self._at(self.self_cols)

    def masked(self, drop_positive: bool) -> Tensor:
        """Logits with the self column (and the positive, if asked) set to -inf, i.e. left out."""
        drop = self.is_self()
        if drop_positive:
            drop |= self._at(self.pos_cols)
        return self.logits.masked_fill(drop, float("-inf"))


def two_view_logits(z_a: Tensor, z_b: Tensor, temperature: float) -> TwoViewLogits:
    """Normalize, gather the keys from every process with gradient, score anchors against keys.

    Under torch.distributed each process scores only its local anchors against all keys, and the
    self/positive columns are offset by ``rank * N``; with DDP's gradient averaging this equals one
    process on the global batch. Call under ``torch.autocast(enabled=False)``: fp32 throughout.

    Args:
        z_a, z_b: (N, D) projections of the two views (normalized here).
        temperature: t > 0.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = z_a.shape[0]
    z_a = F.normalize(z_a.float(), dim=1)
    z_b = F.normalize(z_b.float(), dim=1)
    keys_a, keys_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (W*N, D) each
    global_n = keys_a.shape[0]
    anchors, keys = torch.cat([z_a, z_b]), torch.cat([keys_a, keys_b])  # (2N, D), (2WN, D)
    logits = anchors @ keys.T / temperature  # (2N, 2WN)
    local = torch.arange(n, device=z_a.device) + rank() * n  # this rank's rows among the keys of view a
    self_cols = torch.cat([local, local + global_n])
    pos_cols = torch.cat([local + global_n, local])  # a_i <-> b_i
    return TwoViewLogits(logits, anchors, keys, self_cols, pos_cols)
