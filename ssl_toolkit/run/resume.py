"""``resume=auto|none|PATH``: which run folder and checkpoint a ``fit`` continues from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.recipe.checkpoint import read_checkpoint
from ssl_toolkit.run_folder import run_dir_of, run_folders


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from and the run folder it belongs to (reused, never replaced)."""

    run_dir: Path
    checkpoint: Path
    step: int
    epoch: int
    skipped: tuple[tuple[Path, str], ...] = field(default=())  # unreadable checkpoints and why


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (``read_checkpoint``'s reason: an empty, truncated or
    corrupt file, pickled objects it refuses, no state_dict); None when it reads as a checkpoint."""
    try:
        read_checkpoint(path, mmap=True)
        return None
    except CheckpointError as e:
        return e.reason or "not a checkpoint (no state_dict)"


def newest_checkpoint(run_dir: Path) -> ResumePoint | None:
    """The readable checkpoint of ``run_dir/checkpoints`` with the most optimizer steps (``last.ckpt``
    on ties); unreadable files are skipped and listed in ``skipped``.

    Raises:
        CheckpointError: there are ``*.ckpt`` files but none is readable (one line naming each and why).
    """
    best: tuple[tuple[int, int, bool], Path] | None = None
    skipped: list[tuple[Path, str]] = []
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        problem = checkpoint_problem(path)
        if problem is not None:
            skipped.append((path, problem))
            continue
        ckpt = read_checkpoint(path, mmap=True)
        key = (int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1)), path.name == "last.ckpt")
        if best is None or key > best[0]:
            best = (key, path)
    if best is None:
        if skipped:
            listed = "; ".join(f"{p.name}: {why}" for p, why in skipped)
            raise CheckpointError(
                f"resume: {run_dir / 'checkpoints'} holds {len(skipped)} checkpoint file(s) and none is readable "
                f"({listed}); repair or remove them, or pass resume=none to start a new run"
            )
        return None
    (step, epoch, _), path = best
    return ResumePoint(run_dir=run_dir, checkpoint=path, step=step, epoch=epoch, skipped=tuple(skipped))


def find_resume(resume: str, out_dir: str | Path) -> ResumePoint | None:
    """Resolve the recipe's ``resume`` value.

    Args:
        resume: ``none`` (a new run), ``auto`` (the newest run folder of ``out_dir`` that holds a
            checkpoint file, its newest readable checkpoint; a new run if no folder holds one), a
            ``.ckpt`` file, or a run folder. Unreadable checkpoints passed over are listed in the
            point's ``skipped``.
        out_dir: the recipe's ``out_dir``.

    Raises:
        RecipeError: a path that does not exist or holds no readable checkpoint.
        CheckpointError: ``auto``, and the newest run folder with checkpoint files has none readable
            (never a silent new run).
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
        try:
            point = newest_checkpoint(path)
        except CheckpointError as e:
            raise RecipeError(str(e)) from None
        if point is None:
            raise RecipeError(f"resume: {path} holds no readable checkpoint in checkpoints/")
        return point
    raise RecipeError(f"resume: {resume!r} is neither auto, none, a checkpoint file nor a run folder")


def check_trains_more(point: ResumePoint, max_steps: int, max_epochs: int | None, datamodule_key: str) -> None:
    """Refuse a resume that would train nothing (a finished run resumed without raising its limits).

    Args:
        point: the checkpoint to continue from.
        max_steps: the trainer's ``max_steps`` (-1: no limit).
        max_epochs: the trainer's ``max_epochs`` (None or -1: no limit).
        datamodule_key: where the checkpoint keeps the loader position (the DataModule's class name).

    Raises:
        RecipeError: naming ``trainer.max_steps`` or ``trainer.max_epochs`` and the value to exceed.
    """
    ckpt = read_checkpoint(point.checkpoint, mmap=True)
    position = ckpt.get(datamodule_key)
    epoch = int(position["epoch"]) if isinstance(position, dict) and "epoch" in position else point.epoch
    if max_steps != -1 and point.step >= max_steps:
        raise RecipeError(
            f"trainer.max_steps: {point.checkpoint} is at step {point.step} already; "
            f"set trainer.max_steps above {point.step} to train more"
        )
    if max_epochs is not None and max_epochs != -1 and epoch >= max_epochs:
        raise RecipeError(
            f"trainer.max_epochs: {point.checkpoint} has finished {epoch} epoch(s) (step {point.step}); "
            f"set trainer.max_epochs above {epoch} to train more"
        )
