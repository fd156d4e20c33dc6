"""``ModelCheckpoint`` that keeps its bookkeeping when the run folder is moved or copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


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
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath and state_dict.get("dirpath") not in (None, self.dirpath):
            state_dict = moved_state(state_dict, str(self.dirpath))
        super().load_state_dict(state_dict)
        last = Path(self.dirpath or ".") / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self.save_last and self.dirpath and last.exists():
            self.last_model_path = str(last)
