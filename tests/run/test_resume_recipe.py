"""What a resume's recipe may change against its checkpoint's (ssl_toolkit/run/resume_recipe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_toolkit.errors import RecipeError
from ssl_toolkit.run.resume_recipe import (
    DATA_FIXED,
    check_keeps_checkpoints,
    check_resumable,
    check_same_data,
    differences,
)

CKPT = Path("runs/x/checkpoints/last.ckpt")
SAVED = {
    "out_dir": "runs/x",
    "data": {"name": "synthetic", "num_samples": 256, "batch_size": 16, "num_workers": 2, "root": "/a"},
    "trainer": {"max_epochs": 1},
    "optimizer": {"name": "lars", "lr": 0.3},
    "callbacks": {"checkpoint": {"every_n_train_steps": 5, "save_top_k": -1}, "rankme": {"num_samples": 64}},
}


def _with(**sections: dict) -> dict:
    return {**SAVED, **{k: {**SAVED.get(k, {}), **v} for k, v in sections.items()}}


@pytest.mark.parametrize("key", DATA_FIXED)
def test_a_data_key_that_chooses_the_images_or_batches_is_refused(key: str) -> None:
    with pytest.raises(RecipeError) as e:
        check_same_data(SAVED, _with(data={key: 7}), CKPT)
    line = str(e.value)
    assert line.startswith(f"data.{key}: {CKPT} was trained with ") and "this recipe has 7" in line
    assert "resume=none" in line


def test_moved_data_and_more_workers_resume() -> None:
    check_same_data(SAVED, _with(data={"root": "/b", "num_workers": 8}), CKPT)
    check_resumable(None, _with(data={"num_samples": 7}), CKPT)  # an old checkpoint without its recipe


@pytest.mark.parametrize(("kept", "keeps", "refused"), [
    (-1, 1, True), (-1, None, True), (3, 2, True), (-1, -1, False), (2, 3, False), (2, -1, False), (1, None, False),
])  # fmt: skip
def test_a_lower_save_top_k_is_refused_it_would_delete_the_runs_checkpoints(kept, keeps, refused) -> None:
    saved = _with(callbacks={"checkpoint": {"save_top_k": kept}})
    now = _with(callbacks={"checkpoint": {"every_n_train_steps": 5} | ({} if keeps is None else {"save_top_k": keeps})})
    if refused:
        with pytest.raises(RecipeError, match=r"^callbacks\.checkpoint\.save_top_k: .* set callbacks\.checkpoint"):
            check_keeps_checkpoints(saved, now, CKPT)
    else:
        check_keeps_checkpoints(saved, now, CKPT)


def test_differences_name_each_key_both_values_but_not_those_a_resume_is_for() -> None:
    now = _with(
        trainer={"max_epochs": 3}, optimizer={"lr": 0.1},
        callbacks={"checkpoint": {"every_n_train_steps": 10, "save_top_k": -1}, "rankme": None},
    )  # fmt: skip
    now["out_dir"] = "runs/y"
    assert differences(SAVED, now) == (  # the switched-off RankMe: its section is null, its key gone
        "callbacks.checkpoint.every_n_train_steps (5 -> 10), callbacks.rankme (unset -> null), "
        "callbacks.rankme.num_samples (64 -> unset)"
    )
    assert differences(SAVED, dict(SAVED)) is None and differences(None, SAVED) is None
