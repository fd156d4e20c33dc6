"""``resume=auto|none|PATH``: which run folder and checkpoint a ``fit`` continues from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssl_toolkit.run.checkpoint import read_checkpoint
from ssl_toolkit.run.errors import CheckpointError, RecipeError
from ssl_toolkit.run.run_folder import run_dir_of, run_folders


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from and the run folder it belongs to (reused, never replaced)."""

    run_dir: Path
    checkpoint: Path
    step: int
    epoch: int


def newest_checkpoint(run_dir: Path) -> ResumePoint | None:
    """The readable checkpoint of ``run_dir/checkpoints`` with the most optimizer steps (``last.ckpt``
    on ties); unreadable files are skipped. None if there is none."""
    best: tuple[tuple[int, int, bool], Path] | None = None
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        try:
            ckpt = read_checkpoint(path, mmap=True)
        except CheckpointError:
            continue
        key = (int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1)), path.name == "last.ckpt")
        if best is None or key > best[0]:
            best = (key, path)
    if best is None:
        return None
    (step, epoch, _), path = best
    return ResumePoint(run_dir=run_dir, checkpoint=path, step=step, epoch=epoch)


def find_resume(resume: str, out_dir: str | Path) -> ResumePoint | None:
    """Resolve the recipe's ``resume`` value.

    Args:
        resume: ``none`` (a new run), ``auto`` (the newest run folder of ``out_dir`` that holds a
            checkpoint, its newest checkpoint; a new run if there is none), a ``.ckpt`` file, or a
            run folder.
        out_dir: the recipe's ``out_dir``.

    Raises:
        RecipeError: a path that does not exist or holds no readable checkpoint.
    """
    if resume == "none":
        return None
    if resume == "auto":
        for run_dir in reversed(run_folders(out_dir)):
            point = newest_checkpoint(run_dir)
            if point is not None:
                return point
        return None
    path = Path(resume)
    if path.is_file():
        try:
            ckpt = read_checkpoint(path, mmap=True)
        except CheckpointError as e:
            raise RecipeError(f"resume: {str(e).removeprefix('checkpoint: ')}") from None
        return ResumePoint(run_dir_of(path), path, int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1)))
    if path.is_dir():
        point = newest_checkpoint(path)
        if point is None:
            raise RecipeError(f"resume: {path} holds no readable checkpoint in checkpoints/")
        return point
    raise RecipeError(f"resume: {resume!r} is neither auto, none, a checkpoint file nor a run folder")
