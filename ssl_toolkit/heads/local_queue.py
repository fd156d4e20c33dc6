"""A per-process FIFO of past embeddings that is checkpointed but never synchronized by DDP."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ProcessLocalQueue(nn.Module):
    """G queues of the last ``length`` embeddings (D,) seen by *this* process, newest first.

    SwAV keeps one such queue per process and per code crop (``main_swav.py``: ``queue_length /
    world_size`` rows each). The rows are held in the module's extra state
    (``state_dict()["<prefix>_extra_state"]``), not in a registered buffer: DDP broadcasts every
    buffer from rank 0 before each forward (``broadcast_buffers=True``, Lightning's default), which
    would replace every process's queue with rank 0's. ``per_process_state`` makes ``SSLModule``
    save every process's queue in checkpoints and give each process its own back on resume
    (``ssl_toolkit.process_state``). The fill count is a host int, so deciding "full" needs no
    device sync. ``module.to(device)`` does not move the rows; ``push``/``rows`` follow their
    input's device.

    Args:
        num_queues: G (one per code crop).
        length: rows per queue; 0 makes a queue that is never full.
        dim: embedding width D.

    Example:
        >>> queue = ProcessLocalQueue(num_queues=2, length=64, dim=128)
        >>> z = torch.randn(2 * 32, 128)  # G = 2 code crops of B = 32 samples
        >>> for _ in range(2):
        ...     queue.push(z.unflatten(0, (2, 32)))  # (G, B, D)
        >>> queue.full, queue.rows(torch.device("cpu"))[0].shape  # (L, D) of crop 0
        (True, torch.Size([64, 128]))
    """

    per_process_state = True  # the extra state is this process's own (ssl_toolkit.process_state)

    def __init__(self, num_queues: int, length: int, dim: int) -> None:
        super().__init__()
        if num_queues < 1 or length < 0 or dim < 1:
            raise ValueError(f"queue: need num_queues >= 1, length >= 0, dim >= 1, got {num_queues}, {length}, {dim}")
        self._rows = torch.zeros(num_queues, length, dim)  # (G, L, D)
        self._filled = 0

    @property
    def length(self) -> int:
        return self._rows.shape[1]

    @property
    def filled(self) -> int:
        """Rows pushed so far, at most ``length``."""
        return self._filled

    @property
    def full(self) -> bool:
        return self.length > 0 and self._filled >= self.length

    def rows(self, device: torch.device | None = None) -> Tensor:
        """(G, L, D) embeddings, newest first (zeros where not yet filled), on ``device`` if given."""
        if device is not None and self._rows.device != device:
            self._rows = self._rows.to(device)
        return self._rows

    @torch.no_grad()
    def push(self, z: Tensor) -> None:
        """Put (G, B, D) embeddings in front, dropping the oldest rows."""
        old = self.rows(z.device)
        # A new tensor, never an in-place write: earlier state_dict() snapshots stay as they were.
        self._rows = torch.cat([z.detach().to(old.dtype), old], dim=1)[:, : self.length]
        self._filled = min(self.length, self._filled + z.shape[1])

    def get_extra_state(self) -> dict[str, Tensor | int]:
        return {"rows": self._rows, "filled": self._filled}

    def set_extra_state(self, state: dict[str, Tensor | int]) -> None:
        rows = state["rows"]
        if not isinstance(rows, Tensor) or rows.shape != self._rows.shape:
            got = tuple(rows.shape) if isinstance(rows, Tensor) else rows
            raise ValueError(f"queue: checkpoint rows have shape {got}, this queue {tuple(self._rows.shape)}")
        self._rows = rows.to(self._rows.device, self._rows.dtype)
        self._filled = int(state["filled"])
