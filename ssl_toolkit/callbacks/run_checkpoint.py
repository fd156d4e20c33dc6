"""``ModelCheckpoint`` that keeps its bookkeeping when the run folder is moved or copied."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

log = logging.getLogger(__name__)


def moved_state(state: dict[str, Any], new_dir: str) -> dict[str, Any]:
    """``ModelCheckpoint.state_dict()`` with every file of its old ``dirpath`` renamed into ``new_dir``."""
    old = state.get("dirpath")

    def move(path: Any) -> Any:
        if isinstance(path, str) and path and old and Path(path).parent == Path(old):
            return str(Path(new_dir) / Path(path).name)
        return path

    out = {key: move(value) for key, value in state.items()}
    out["dirpath"] = new_dir
    if isinstance(state.get("best_k_models"), dict):
        out["best_k_models"] = {move(path): score for path, score in state["best_k_models"].items()}
    return out


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same keywords) for a run folder that may move.

    Lightning restores ``last_model_path``, ``best_k_models`` and the best score only when the saved
    ``dirpath`` equals the new one. In a moved or copied run folder it forgot them: ``last.ckpt``
    existed but was "not ours", so new work went to ``last-v1.ckpt``; the ``save_top_k`` tracker
    started empty, so a second ``best-*`` file appeared and the first was never removed. Here the
    saved paths that lay in the old ``checkpoints/`` are mapped into the new one before Lightning's
    own ``load_state_dict`` runs. And ``last.ckpt`` of this folder is always this run's newest state
    (a resume from an older checkpoint, whose saved ``last_model_path`` may still be empty, goes on
    in ``last.ckpt``, never in a ``last-v1.ckpt`` beside it).

    A monitored checkpoint (``best-rankme-*``) due before any evaluation ran (``limit_val_batches=0``,
    or ``max_steps`` stopping before the first evaluation) is not written, as in Lightning, but said
    in one line of our own instead of Lightning's "could not find the monitored key ... HINT: Did you
    call `log(...)`" warning, which points at code the user did not write. The same holds after an
    evaluation that did not log the monitored key (RankMe with none of its rows embedded), where
    Lightning would raise.
    """

    _said_unmonitored = ""  # the reason last said, so each reason is said once
    _evaluated = False  # an evaluation (not the sanity check) has ended in this process

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._evaluated = True
        super().on_validation_end(trainer, pl_module)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if self.save_top_k != 0 and self.monitor is not None and self.monitor not in monitor_candidates:
            # Lightning would warn (no evaluation yet) or raise (an evaluation ran without logging it,
            # e.g. RankMe with none of its rows embedded): one line of ours instead, and no file.
            if self._evaluated:
                why = "was not computed by the evaluation (see the lines above)"
            else:
                why = "is logged by evaluation, which has not run (see trainer.limit_val_batches / val_check_interval)"
            if why != self._said_unmonitored and trainer.is_global_zero:
                log.warning("checkpoint %r not written at step %d: %s %s", self.filename, trainer.global_step,
                            self.monitor, why)  # fmt: skip
            self._said_unmonitored = why
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath and state_dict.get("dirpath") not in (None, self.dirpath):
            state_dict = moved_state(state_dict, str(self.dirpath))
        super().load_state_dict(state_dict)
        last = Path(self.dirpath or ".") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self.save_last and self.dirpath and last.exists():
            self.last_model_path = str(last)
