"""``fit``: one training run from a validated recipe, with its outputs laid out in a run folder."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import math
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from ssl_toolkit.callbacks.curves import Curves
from ssl_toolkit.callbacks.finite_loss import FiniteLoss, NonFiniteLossError
from ssl_toolkit.callbacks.recipe_in_checkpoint import RecipeInCheckpoint
from ssl_toolkit.callbacks.rng_state import RNGState
from ssl_toolkit.callbacks.throughput import Throughput
from ssl_toolkit.checkpoint import read_checkpoint
from ssl_toolkit.checkpoint_io import AtomicCheckpointIO
from ssl_toolkit.recipe import RecipeError, build_parts, build_trainer
from ssl_toolkit.resume import ResumePoint, find_resume, newest_checkpoint


@dataclass
class FitResult:
    run_dir: Path
    checkpoint: Path | None
    final_loss: float
    seconds: float
    images_per_sec: float
    steps: int
    val_metrics: dict[str, float]


def fresh_run_dir(out_dir: str | Path) -> Path:
    """``out_dir`` if it is absent or empty, else the first free ``out_dir_1``, ``out_dir_2``, ...

    A finished run's checkpoints and logs are never overwritten by a new run. Nothing is created.
    """
    base = Path(out_dir)
    candidate, n = base, 0
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    return candidate


class TrainingStopped(RuntimeError):
    """Training stopped on a non-finite loss; the message is one line naming the step and the last
    good checkpoint."""


def git_commit() -> str:
    """The commit of the ssl_toolkit checkout in use, with ``-dirty`` for uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
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


def fit(recipe: dict[str, Any], argv: list[str] | None = None) -> FitResult:
    """Build everything (all validation happens here, before anything is written), then ``trainer.fit``.

    ``recipe["resume"]`` (``none`` by default, ``auto``, a checkpoint or a run folder) continues a
    run in its own folder: optimizer, scheduler, EMA teacher, head buffers, callback states, RNG
    states and the loader position come from the checkpoint; earlier files are kept (the resumed
    part logs to ``csv/resume-N/``, the resume is recorded in ``resume-N.json``).
    """
    pl.seed_everything(int(recipe.get("seed", 0)), workers=True, verbose=False)
    parts = build_parts(recipe)
    point = find_resume(recipe.get("resume", "none"), recipe.get("out_dir", "runs/run"))
    run_dir = point.run_dir if point is not None else fresh_run_dir(recipe.get("out_dir", "runs/run"))
    resolved = {**recipe, "out_dir": str(run_dir)}
    throughput = Throughput()
    extra = [throughput, RecipeInCheckpoint(resolved), Curves(run_dir / "curves.png"), RNGState()]
    if "finite_loss" not in (recipe.get("callbacks") or {}):
        extra.append(FiniteLoss())
    with held_logs("lightning.pytorch"):  # Lightning's device banner only once the checks pass
        trainer = build_trainer(recipe, run_dir, extra_callbacks=extra)
        check_batch_per_process(parts.datamodule, trainer)
        if point is not None:
            check_fits(parts.module, point)
    if point is not None:
        # Lightning's CSV writer would replace csv/metrics.csv: the resumed part goes to csv/resume-N/.
        version = resume_name(run_dir)
        trainer.loggers = [
            CSVLogger(save_dir=str(run_dir), name="csv", version=version) if isinstance(lg, CSVLogger) else lg
            for lg in trainer.loggers
        ]
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if rank_zero_only.rank == 0:  # DDP: only rank 0 writes (loggers and checkpoints do the same)
        write_run_files(run_dir, resolved, argv, point, getattr(parts.datamodule, "skipped", []))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # SSLModule owns on_after_batch_transfer on purpose (augmentation on the device).
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        # The held-out split is there for evaluation callbacks; without them there is no val loop.
        warnings.filterwarnings("ignore", message=".*have no `validation_step`.*")
        # The loader position is in the DataModule's checkpointed state (ResumableSampler), which
        # Lightning's mid-epoch warning does not know about; a resumed run reuses checkpoints/.
        warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        try:
            ckpt_path = None if point is None else point.checkpoint
            trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt_path, weights_only=True)
        except NonFiniteLossError as e:
            last = newest_checkpoint(run_dir)
            kept = f"last good checkpoint: {last.checkpoint} (step {last.step})" if last else "no checkpoint written"
            raise TrainingStopped(f"{e}; {kept}") from None
    seconds = time.perf_counter() - start
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()  # flush the offline run before the summary is printed
    loss = trainer.callback_metrics.get("train/loss")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    return FitResult(
        run_dir=run_dir,
        checkpoint=ckpt if ckpt.exists() else None,
        final_loss=float(loss) if loss is not None else math.nan,
        seconds=seconds,
        images_per_sec=throughput.images_per_sec,
        steps=trainer.global_step,
        val_metrics={k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")},
    )


@contextlib.contextmanager
def held_logs(name: str) -> Iterator[None]:
    """Hold the records of logger ``name``; pass them on if the block succeeds, drop them if it
    raises (a failed check then prints its one-line error and nothing else)."""
    logger = logging.getLogger(name)
    handlers, held = logger.handlers[:], logging.handlers.BufferingHandler(capacity=10**6)
    logger.handlers = [held]
    try:
        yield
    finally:
        logger.handlers = handlers
    for record in held.buffer:  # reached only without an exception
        logger.handle(record)


def write_run_files(
    run_dir: Path,
    resolved: dict[str, Any],
    argv: list[str] | None,
    point: ResumePoint | None,
    skipped: list[tuple[str, str]],
) -> None:
    """The run folder's own files, written once every check has passed.

    A new run gets ``recipe.yaml`` and ``run.json``; a resumed one ``resume-N.json`` (and a temporary
    file of a save cut short by the crash is removed). Image files skipped as undecodable are listed
    in ``bad_files.txt``.
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
    if point is None:
        (run_dir / "recipe.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        (run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    else:
        record = {**meta, "checkpoint": str(point.checkpoint), "step": point.step, "epoch": point.epoch,
                  "recipe": resolved}  # fmt: skip
        (run_dir / f"{resume_name(run_dir)}.json").write_text(json.dumps(record, indent=2) + "\n")
        for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
            tmp.unlink()
    if skipped and not (run_dir / "bad_files.txt").exists():
        # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes
        lines = "".join(f"{path}\t{why}\n" for path, why in skipped)
        (run_dir / "bad_files.txt").write_text(lines, encoding="utf-8", errors="surrogateescape")


def resume_name(run_dir: Path) -> str:
    """``resume-N`` for the first N without a ``resume-N.json`` in ``run_dir``."""
    return next(f"resume-{n}" for n in range(1, 10**6) if not (run_dir / f"resume-{n}.json").exists())


def check_batch_per_process(datamodule: pl.LightningDataModule, trainer: pl.Trainer) -> None:
    """``data.batch_size`` is per process: every process needs a full batch of its own each step (and
    gradients are accumulated over at least one batch)."""
    if trainer.accumulate_grad_batches < 1:  # Lightning would divide by it
        raise RecipeError(f"trainer.accumulate_grad_batches: must be >= 1, got {trainer.accumulate_grad_batches}")
    processes = trainer.num_devices * trainer.num_nodes
    images, batch = datamodule.num_train_samples, datamodule.batch_size
    if images // processes < batch:
        raise RecipeError(
            f"data.batch_size: {batch} per process x {processes} processes needs {batch * processes} "
            f"training images per step; the train split has {images}"
        )


def check_fits(module: pl.LightningModule, point: ResumePoint) -> None:
    """The checkpoint's weights have the recipe's names and shapes (else resuming would fail late)."""
    saved = read_checkpoint(point.checkpoint, mmap=True)["state_dict"]
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in saved.items()}
    if wanted != have:
        diff = sorted(set(wanted.items()) ^ set(have.items()))[:3]
        raise RecipeError(f"resume: {point.checkpoint} does not fit this recipe's model (e.g. {diff})")
