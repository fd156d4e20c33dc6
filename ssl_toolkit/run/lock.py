"""One training process per run folder: ``<run>/.lock`` holds the owner's host, pid and job id.

A second ``fit`` into the same folder (two ``resume=auto`` jobs started together, a new run racing
another for an empty ``out_dir``) stops with one line naming the owner. A lock left by a process
that died without cleaning up is taken over when it provably belongs to nobody: the pid is dead on
this host, or it was written by an earlier run of the same SLURM job (a requeued job keeps its id and
may land on another node). Created with ``os.link`` of a complete file: atomic, NFS-safe.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path

from ssl_toolkit.errors import RecipeError, WriteError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def _stale(owner: dict[str, object]) -> bool:
    me = _owner()
    if owner.get("slurm_job_id") and owner.get("slurm_job_id") == me["slurm_job_id"] and owner.get("pid") != me["pid"]:
        return True  # an earlier run of this (requeued) job
    return owner.get("host") == me["host"] and isinstance(owner.get("pid"), int) and not _alive(owner["pid"])


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` for the block (created with the folder).

    Raises:
        RecipeError: another live process holds the lock (names it and the lock file).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # e.g. under /proc or a read-only mount: one line naming the key
            raise WriteError(f"out_dir: cannot create {self.path.parent} ({os.strerror(e.errno or 0)})") from None
        tmp = self.path.with_name(f"{LOCK_NAME}.{secrets.token_hex(6)}.tmp")
        try:
            try:
                tmp.write_text(json.dumps(_owner()) + "\n")
            except OSError as e:  # a full disk: one line, and the half-written file goes
                raise WriteError(f"out_dir: cannot write the lock {tmp} ({os.strerror(e.errno or 0)})") from None
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # fails if the lock exists: atomic test-and-set
                    self.held = True
                    return
                except FileExistsError:
                    owner = self._read()
                    if owner is not None and not _stale(owner):
                        raise RecipeError(
                            f"out_dir: {self.path.parent} is in use by process {owner.get('pid')} on "
                            f"{owner.get('host')} (lock {self.path}); wait for it, or delete the lock "
                            "if that process is gone"
                        ) from None
                    # Stale (or unreadable half-written) lock: move it aside; only one taker succeeds.
                    try:
                        os.rename(self.path, self.path.with_name(f"{LOCK_NAME}.stale.{secrets.token_hex(4)}"))
                    except FileNotFoundError:
                        pass
            raise RecipeError(f"out_dir: could not lock {self.path.parent} (lock {self.path} keeps changing)")
        finally:
            tmp.unlink(missing_ok=True)
            for stale in self.path.parent.glob(f"{LOCK_NAME}.stale.*"):
                stale.unlink(missing_ok=True)

    def _read(self) -> dict[str, object] | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def release(self) -> None:
        if self.held:
            owner = self._read()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
