"""Atomic checkpoint files: a crash or kill while saving never leaves a half-written checkpoint."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_toolkit.errors import WRITE_ERRNOS, WriteError


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` only once the new file is complete.

    Writes a temporary file in the same folder (``.<name>.<random>.tmp``), flushes and fsyncs it,
    then ``os.replace``-s it over ``path`` (atomic on POSIX and Windows within one file system) and
    fsyncs the folder so the rename survives a power loss. On any error the temporary file is
    removed and ``path`` keeps its previous content.

    Raises:
        WriteError: no space left, quota exceeded or a read-only file system (names ``path`` and
            says that its previous content is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never reuse a file; mode 0o666 minus the process umask, like any file the user writes.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
            raise WriteError(f"{path}: {os.strerror(e.errno)} while saving; {kept}") from None
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with ``atomic_save`` for local paths.

    Lightning's own writer goes through an fsspec transaction whose temporary file lives in the
    system temp folder and is moved without fsync: across file systems the move is a copy that can
    be cut half-way. Remote URLs (``s3://``...) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)
