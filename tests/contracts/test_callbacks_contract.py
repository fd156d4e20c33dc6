"""Contract shared by every entry of ``CALLBACKS`` (the recipe's ``callbacks:`` section), driven by ``CASES``.

Every entry builds from its row, passes the recipe's key and type checks, is a Lightning callback,
and its ``state_dict`` survives a round trip into a fresh instance (resume restores callbacks so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from ssl_toolkit.callbacks import CALLBACKS
from ssl_toolkit.recipe.build import check_call

# The contract table: one row of recipe keywords per entry of CALLBACKS (a missing row fails
# test_every_callback_has_exactly_one_row). ``dirpath`` of checkpoint callbacks is set by ``fit``.
CASES: dict[str, dict[str, Any]] = {
    "checkpoint": {"every_n_epochs": 1, "save_top_k": -1},
    "rankme_checkpoint": {"monitor": "val/rankme", "mode": "max", "filename": "best-rankme-{epoch}"},
    "lr_monitor": {"logging_interval": "step"},
    "throughput": {"skip_steps": 1},
    "knn": {"k": 5, "temperature": 0.1, "bank_size": 32, "bank_seed": 1},
    "linear_probe": {"lr": 0.05},
    "rankme": {"num_samples": 64, "seed": 1, "alpha_req": True},
    "diagnostics": {"num_images": 32, "seed": 1},
    "finite_loss": {"check_every_n_steps": 2},
}


def test_every_callback_has_exactly_one_row() -> None:
    assert set(CASES) == set(CALLBACKS), f"missing: {set(CALLBACKS) - set(CASES)}, extra: {set(CASES) - set(CALLBACKS)}"


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_row_passes_the_recipe_checks_and_builds(name: str, tmp_path: Path) -> None:
    check_call(f"callbacks.{name}", CALLBACKS[name], CASES[name], derived={"dirpath"})
    extra = {"dirpath": str(tmp_path)} if name.endswith("checkpoint") else {}
    callback = CALLBACKS[name](**CASES[name], **extra)
    assert isinstance(callback, pl.Callback)


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_state_dict_round_trip(name: str, tmp_path: Path) -> None:
    extra = {"dirpath": str(tmp_path)} if name.endswith("checkpoint") else {}
    callback = CALLBACKS[name](**CASES[name], **extra)
    state = callback.state_dict()
    fresh = CALLBACKS[name](**CASES[name], **extra)
    fresh.load_state_dict(state)
    restored = fresh.state_dict()
    assert restored.keys() == state.keys()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(restored[key], value, rtol=0, atol=0)
        else:
            assert restored[key] == value, key
