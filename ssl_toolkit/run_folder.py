"""The run folder: how folders and files are named so nothing a user has is ever overwritten, and
the files a run writes about itself (``recipe.yaml``, ``run.json``, ``resume-N.json``, ``bad_files.txt``).

One naming rule for everything numbered: ``NAME``, then ``NAME_1``, ``NAME_2``, ... (run folders,
``eval/*.json`` results) or ``resume-1``, ``resume-2``, ... (resumed parts of a run).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf


def numbered_paths(path: Path, start: int = 0, sep: str = "_") -> Iterator[Path]:
    """``path`` (when ``start == 0``), then ``<stem><sep>1<suffix>``, ``<stem><sep>2<suffix>``, ..."""
    for n in range(start, 10**9):
        yield path if n == 0 else path.with_name(f"{path.stem}{sep}{n}{path.suffix}")
    raise RuntimeError(f"no free name for {path}")  # pragma: no cover - 10**9 names taken


def fresh_run_dir(out_dir: str | Path) -> Path:
    """``out_dir`` if it is absent or empty, else the first free ``out_dir_1``, ``out_dir_2``, ...

    A finished run's checkpoints and logs are never overwritten by a new run. Nothing is created.
    """
    return next(p for p in numbered_paths(Path(out_dir)) if not (p.exists() and any(p.iterdir())))


# Set by rank 0 once it has chosen the run folder; Lightning's launcher starts the other processes of
# a ``trainer.devices=N`` run from rank 0's environment, so they read the same folder from it.
RUN_DIR_ENV = "SSL_TOOLKIT_RUN_DIR"


def agreed_run_dir(out_dir: str | Path, rank: int) -> Path:
    """The run folder of a new run, the same on every process of a multi-process run.

    Rank 0 picks ``fresh_run_dir(out_dir)`` and exports ``<its pid>:<folder>`` in
    ``SSL_TOOLKIT_RUN_DIR``. Another rank takes that folder when its parent process is the one that
    exported it: processes started by Lightning for ``trainer.devices=N`` are rank 0's children and
    start after rank 0 has written into the folder, so ``fresh_run_dir`` would hand them
    ``out_dir_1``. Processes started together (``torchrun``, ``srun``) have another parent (a stale
    value inherited from an earlier run is ignored) and each compute the folder before any writes.

    Args:
        out_dir: the recipe's ``out_dir``.
        rank: this process's global rank (``rank_zero_only.rank``).
    """
    pid, _, inherited = os.environ.get(RUN_DIR_ENV, "").partition(":")
    if rank != 0 and inherited and pid == str(os.getppid()):
        return Path(inherited)
    run_dir = fresh_run_dir(out_dir)
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir}"
    return run_dir


def run_folders(out_dir: str | Path) -> list[Path]:
    """``out_dir``, ``out_dir_1``, ``out_dir_2``... that exist, oldest first (``fresh_run_dir`` order)."""
    base = Path(out_dir)
    found: list[tuple[int, Path]] = [(0, base)] if base.is_dir() else []
    if base.parent.is_dir():
        pattern = re.compile(re.escape(base.name) + r"_(\d+)")
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a checkpoint: the parent of ``checkpoints/``, else the file's folder."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resume_name(run_dir: Path) -> str:
    """``resume-N`` for the first N >= 1 without a ``resume-N.json`` in ``run_dir``."""
    return next(p for p in numbered_paths(run_dir / "resume.json", start=1, sep="-") if not p.exists()).stem


def write_new_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path``, or to ``<stem>_1.json``, ``<stem>_2.json``... if it exists.

    Earlier results are never overwritten; ``open(mode="x")`` makes the check race-free.

    Returns:
        the path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for candidate in numbered_paths(path):
        try:
            with candidate.open("x") as f:
                f.write(json.dumps(data, indent=2) + "\n")
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"no free name for {path}")  # pragma: no cover


def git_commit() -> str:
    """The commit of the ssl_toolkit checkout in use, with ``-dirty`` for uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def write_run_files(
    run_dir: Path,
    resolved: dict[str, Any],
    argv: list[str] | None,
    resumed_from: tuple[Path, int, int] | None,
    skipped: list[tuple[str, str]],
) -> None:
    """The run folder's own files, written once every check has passed.

    A new run gets ``recipe.yaml`` and ``run.json``; a resumed one (``resumed_from`` = checkpoint,
    step, epoch) ``resume-N.json`` (and a temporary file of a save cut short by the crash is
    removed). Image files skipped as undecodable are listed in ``bad_files.txt``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "git_commit": git_commit(),
        "command": argv if argv is not None else sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }
    if resumed_from is None:
        (run_dir / "recipe.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        (run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    else:
        checkpoint, step, epoch = resumed_from
        record = {**meta, "checkpoint": str(checkpoint), "step": step, "epoch": epoch, "recipe": resolved}
        (run_dir / f"{resume_name(run_dir)}.json").write_text(json.dumps(record, indent=2) + "\n")
        for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
            tmp.unlink()
    if skipped and not (run_dir / "bad_files.txt").exists():
        # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes
        lines = "".join(f"{path}\t{why}\n" for path, why in skipped)
        (run_dir / "bad_files.txt").write_text(lines, encoding="utf-8", errors="surrogateescape")


def check_out_dir(out_dir: str | Path) -> None:
    """``out_dir`` is a folder, or can be created as one (its nearest existing parent is a writable
    folder). Nothing is created.

    Raises:
        RecipeError: naming ``out_dir`` and what is in the way.
    """
    from ssl_toolkit.errors import RecipeError

    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise RecipeError(f"out_dir: {path} is a file, not a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise RecipeError(f"out_dir: {path} is not writable")
    if not path.exists():
        if not parent.is_dir():
            raise RecipeError(f"out_dir: cannot create {path} ({parent} is a file)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RecipeError(f"out_dir: cannot create {path} ({parent} is not writable)")


def check_writable(folder: Path, what: str) -> None:
    """``folder`` exists and a file can be created in it, or it can be created (its nearest existing
    parent is a writable folder); tried with a real file, so read-only mounts and root alike are
    judged right. Nothing is left behind.

    Raises:
        UserError: naming ``what`` (the option or key) and the folder.
    """
    import errno
    import tempfile

    from ssl_toolkit.errors import ArgumentError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ArgumentError(f"{what}: cannot write into {folder} ({existing} is a file)")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as e:
        why = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left"}.get(e.errno, "not writable")
        raise ArgumentError(f"{what}: cannot write into {folder} ({existing}: {why})") from None
