"""Lightning loggers for a run: CSV always works; wandb is offline unless asked otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lightning.pytorch.loggers import CSVLogger, Logger


def build_loggers(
    run_dir: Path,
    csv: bool = True,
    wandb: bool = False,
    wandb_mode: Literal["offline", "online", "disabled"] = "offline",
    wandb_project: str = "ssl_toolkit",
    wandb_entity: str | None = None,
    run_name: str | None = None,
) -> list[Logger]:
    """Loggers writing under ``run_dir`` (``run_dir/csv/metrics.csv``, ``run_dir/wandb``).

    wandb needs no account in ``offline`` mode (the default); ``wandb sync run_dir/wandb/...``
    uploads later. ``online`` is used only when the recipe says so.
    """
    loggers: list[Logger] = []
    if csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=wandb_project, entity=wandb_entity, name=run_name or run_dir.name,
                                   save_dir=str(run_dir), offline=wandb_mode == "offline",
                                   mode=wandb_mode))  # fmt: skip
    return loggers
