"""Lightning loggers for a run: CSV always works; wandb is offline unless asked otherwise."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

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
    if wandb and wandb_mode == "online" and not wandb_logged_in():
        from ssl_toolkit.errors import RecipeError

        raise RecipeError(
            "logger.wandb_mode: online needs a wandb login (run `wandb login` or set WANDB_API_KEY); "
            "or use logger.wandb_mode=offline and `wandb sync` the run later"
        )
    loggers: list[Logger] = []
    if csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if wandb:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(project=wandb_project, entity=wandb_entity, name=run_name or run_dir.name,
                             save_dir=str(run_dir), offline=wandb_mode == "offline", mode=wandb_mode)  # fmt: skip
        # Lightning always passes wandb.init(anonymous=None), and wandb (0.31 here) warns on every run
        # that the setting has no effect; leaving the key out is the same init without the warning.
        # getattr with a default: a private attribute of Lightning's WandbLogger, other versions may lack it.
        if getattr(logger, "_wandb_init", {}).get("anonymous", "unset") is None:
            del logger._wandb_init["anonymous"]
        loggers.append(logger)
    return loggers


def wandb_logged_in() -> bool:
    """Whether wandb has credentials without asking: ``WANDB_API_KEY``, an identity token file, or
    a ``netrc`` entry for the wandb host (where ``wandb login`` stores the key)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False
