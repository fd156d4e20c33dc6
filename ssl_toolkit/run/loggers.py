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

        logger = WandbLogger(project=wandb_project, entity=wandb_entity, name=run_name or run_dir.name,
                             save_dir=str(run_dir), offline=wandb_mode == "offline", mode=wandb_mode)  # fmt: skip
        # Lightning always passes wandb.init(anonymous=None), and wandb (0.31 here) warns on every run
        # that the setting has no effect; leaving the key out is the same init without the warning.
        if getattr(logger, "_wandb_init", {}).get("anonymous", "unset") is None:
            del logger._wandb_init["anonymous"]
        loggers.append(logger)
    return loggers
