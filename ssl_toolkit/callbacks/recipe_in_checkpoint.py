"""Store the resolved recipe inside every checkpoint, so a checkpoint alone can rebuild its model."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class RecipeInCheckpoint(pl.Callback):
    """Adds ``checkpoint["recipe"]`` (the resolved recipe as plain dicts, lists and scalars).

    Plain types only, so ``torch.load(path, weights_only=True)`` still reads the checkpoint.
    """

    def __init__(self, recipe: dict[str, Any]) -> None:
        self.recipe = recipe

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["recipe"] = self.recipe
