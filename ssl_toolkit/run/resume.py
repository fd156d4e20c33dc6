"""``resume=auto|none|PATH``: which run folder and checkpoint a ``fit`` continues from.

Each candidate checkpoint file is read once (``read_checkpoint(mmap=True)``: tensors are mapped,
not copied); the chosen one's dict travels in ``ResumePoint.saved`` to the checks before training,
so a resumed run deserialises its checkpoint once before Lightning loads it to restore the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.recipe.build import Parts
from ssl_toolkit.recipe.checkpoint import read_checkpoint
from ssl_toolkit.run.resume_recipe import check_resumable
from ssl_toolkit.run_folder import run_dir_of, run_folders


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from and the run folder it belongs to (reused, never replaced).

    ``saved`` is the checkpoint as read when it was chosen (``read_checkpoint(mmap=True)``), for the
    checks before training; Lightning reads the file again itself to restore the run.
    """

    run_dir: Path
    checkpoint: Path
    step: int
    epoch: int
    skipped: tuple[tuple[Path, str], ...] = field(default=())  # unreadable checkpoints and why
    saved: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls, run_dir: Path, checkpoint: Path, saved: dict[str, Any], skipped: tuple[tuple[Path, str], ...] = ()
    ) -> ResumePoint:
        """The point of a checkpoint read as ``saved``: its step and epoch from ``saved``."""
        step, epoch = int(saved.get("global_step", -1)), int(saved.get("epoch", -1))
        return cls(run_dir, checkpoint, step, epoch, skipped=skipped, saved=saved)


def problem_of(error: CheckpointError) -> str:
    """The short reason a checkpoint cannot be resumed from, from ``read_checkpoint``'s error."""
    return error.reason or "not a checkpoint (no state_dict)"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (``read_checkpoint``'s reason: an empty, truncated or
    corrupt file, pickled objects it refuses, no state_dict); None when it reads as a checkpoint."""
    try:
        read_checkpoint(path, mmap=True)
        return None
    except CheckpointError as e:
        return problem_of(e)


def newest_checkpoint(run_dir: Path) -> ResumePoint | None:
    """The readable checkpoint of ``run_dir/checkpoints`` with the most optimizer steps (``last.ckpt``
    on ties); unreadable files are skipped and listed in ``skipped``.

    Raises:
        CheckpointError: there are ``*.ckpt`` files but none is readable (one line naming each and why).
    """
    best: tuple[tuple[int, int, bool], Path, dict[str, Any]] | None = None
    skipped: list[tuple[Path, str]] = []
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        try:
            ckpt = read_checkpoint(path, mmap=True)  # once per file: the best one's dict is kept
        except CheckpointError as e:
            skipped.append((path, problem_of(e)))
            continue
        key = (int(ckpt.get("global_step", -1)), int(ckpt.get("epoch", -1)), path.name == "last.ckpt")
        if best is None or key > best[0]:
            best = (key, path, ckpt)
    if best is None:
        if skipped:
            listed = "; ".join(f"{p.name}: {why}" for p, why in skipped)
            raise CheckpointError(
                f"resume: {run_dir / 'checkpoints'} holds {len(skipped)} checkpoint file(s) and none is readable "
                f"({listed}); repair or remove them, or pass resume=none to start a new run"
            )
        return None
    _, path, ckpt = best
    return ResumePoint.of(run_dir, path, ckpt, skipped=tuple(skipped))


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
        return ResumePoint.of(run_dir_of(path), path, ckpt)
    if path.is_dir():
        try:
            point = newest_checkpoint(path)
        except CheckpointError as e:
            raise RecipeError(str(e)) from None
        if point is None:
            raise RecipeError(f"resume: {path} holds no readable checkpoint in checkpoints/")
        return point
    raise RecipeError(f"resume: {resume!r} is neither auto, none, a checkpoint file nor a run folder")


def check_resume(point: ResumePoint, parts: Parts, recipe: dict[str, Any], trainer: pl.Trainer) -> None:
    """Everything a resume must satisfy before anything is written, read from ``point.saved``: the
    weights fit the recipe's model, the recipe keeps the checkpoint's kinds of parts, its data and the
    checkpoints its run kept (``resume_recipe``), and the trainer's limits leave steps to train.

    Raises:
        RecipeError: naming the checkpoint and the recipe key at fault.
    """
    check_fits(parts.module, point)
    check_resumable(point.saved.get("recipe"), recipe, point.checkpoint)
    check_trains_more(point, trainer.max_steps, trainer.max_epochs, type(parts.datamodule).__qualname__)


def check_trains_more(point: ResumePoint, max_steps: int, max_epochs: int | None, datamodule_key: str) -> None:
    """Refuse a resume that would train nothing (a finished run resumed without raising its limits).

    Args:
        point: the checkpoint to continue from (``point.saved`` is read, not the file).
        max_steps: the trainer's ``max_steps`` (-1: no limit).
        max_epochs: the trainer's ``max_epochs`` (None or -1: no limit).
        datamodule_key: where the checkpoint keeps the loader position (the DataModule's class name).

    Raises:
        RecipeError: naming ``trainer.max_steps`` or ``trainer.max_epochs`` and the value to exceed.
    """
    position = point.saved.get(datamodule_key)
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


def _layout(value: Any) -> Any:
    """What must match for a state-dict entry to load: a tensor's shape; for module extra state (a
    SwAV queue's ``{"rows": Tensor, "filled": int}``) the same, entry by entry; else the type."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _layout(v)) for k, v in value.items()))
    return type(value).__name__


def check_fits(module: pl.LightningModule, point: ResumePoint) -> None:
    """The checkpoint's weights (and extra state) have the recipe's names and shapes (else resuming
    would fail late); reads ``point.saved``, not the file."""
    saved = point.saved["state_dict"]
    wanted = {k: _layout(v) for k, v in module.state_dict().items()}
    have = {k: _layout(v) for k, v in saved.items()}
    if wanted != have:
        raise RecipeError(f"resume: {point.checkpoint} does not fit this recipe's model ({_mismatch(have, wanted)})")


def _mismatch(have: dict[str, Any], wanted: dict[str, Any], shown: int = 3) -> str:
    """The first ``shown`` entries that differ, each saying which side holds what."""
    parts = []
    for key in sorted(set(have) | set(wanted)):
        saved, needed = have.get(key), wanted.get(key)
        if saved == needed:
            continue
        if saved is None:
            parts.append(f"{key}: not in the checkpoint, the recipe's model has {needed}")
        elif needed is None:
            parts.append(f"{key}: in the checkpoint {saved}, not in the recipe's model")
        else:
            parts.append(f"{key}: checkpoint {saved}, recipe's model {needed}")
    more = f"; and {len(parts) - shown} more" if len(parts) > shown else ""
    return "; ".join(parts[:shown]) + more
