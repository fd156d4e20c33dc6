"""Settings that used to do silently less than asked: the step-interval checkpoint override of the
shipped recipes validates; a diverged run ends with one line and its last good checkpoint (never
RankMe's LinAlgError). The one-line errors of bad settings are in tests/run/test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.heads.simclr import SimCLRHead
from ssl_toolkit.recipe.build import load_recipe
from ssl_toolkit.run.cli import main


def _recipe(tmp_path: Path, name: str = "simclr", **changes: dict) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", tmp_path, steps=2)
    recipe["callbacks"] = {}
    for section, values in changes.items():
        recipe[section] = {**(recipe.get(section) or {}), **values}
    path = tmp_path / "r.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def test_step_interval_override_of_a_shipped_recipe_validates() -> None:
    steps = ["callbacks.checkpoint.every_n_train_steps=5000", "callbacks.checkpoint.every_n_epochs=null"]
    recipe = load_recipe(REPO / "recipes" / "imagenet100" / "simclr.yaml", steps)
    assert recipe["callbacks"]["checkpoint"] == {"every_n_train_steps": 5000, "every_n_epochs": None, "save_top_k": -1}


def test_diverged_run_with_rankme_ends_with_one_line_and_the_last_good_checkpoint(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # The loss goes to inf at step 6 (epoch 1 of 4-step epochs); the weights and features are NaN by
    # the end of the epoch, where RankMe's SVD used to run first and raise LinAlgError.
    forward = SimCLRHead.forward

    def bad_forward(self, views, batch):  # noqa: ANN001, ANN202
        out = forward(self, views, batch)
        if batch.step == 5:
            out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(SimCLRHead, "forward", bad_forward)
    callbacks = {"rankme": {"num_samples": 32}, "checkpoint": {"every_n_train_steps": 5, "save_top_k": -1}}
    path = _recipe(tmp_path, trainer={"max_steps": 12, "max_epochs": 3}, callbacks=callbacks)
    assert main(["fit", str(path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ssl-toolkit:")]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert lines == [f"ssl-toolkit: error: train/loss is inf at step 6 (epoch 1); training stopped; "
                     f"last good checkpoint: {last} (step 5)"]  # fmt: skip
    assert "LinAlgError" not in err and "Traceback" not in err
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
