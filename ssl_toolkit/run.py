"""``fit``: one training run from a validated recipe, with its outputs laid out in a run folder."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from ssl_toolkit.callbacks.curves import Curves
from ssl_toolkit.callbacks.recipe_in_checkpoint import RecipeInCheckpoint
from ssl_toolkit.callbacks.throughput import Throughput
from ssl_toolkit.recipe import build_parts, build_trainer


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

    A finished run's checkpoints and logs are never overwritten by a new run.
    """
    base = Path(out_dir)
    candidate, n = base, 0
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


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
    """Build everything (all validation happens here, before training), then ``trainer.fit``."""
    pl.seed_everything(int(recipe.get("seed", 0)), workers=True, verbose=False)
    parts = build_parts(recipe)
    run_dir = fresh_run_dir(recipe.get("out_dir", "runs/run"))
    resolved = {**recipe, "out_dir": str(run_dir)}
    (run_dir / "recipe.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    meta = {
        "git_commit": git_commit(),
        "command": argv if argv is not None else sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    throughput = Throughput()
    extra = [throughput, RecipeInCheckpoint(resolved), Curves(run_dir / "curves.png")]
    trainer = build_trainer(recipe, run_dir, extra_callbacks=extra)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # SSLModule owns on_after_batch_transfer on purpose (augmentation on the device).
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        # The held-out split is there for evaluation callbacks; without them there is no val loop.
        warnings.filterwarnings("ignore", message=".*have no `validation_step`.*")
        trainer.fit(parts.module, datamodule=parts.datamodule)
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
