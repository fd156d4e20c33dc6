"""Configuration that used to do silently less than asked, or fail with a traceback after files were
written, is refused before training with one line naming the key or path (exit 2, nothing written);
a diverged run ends with one line and its last good checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.heads.simclr import SimCLRHead
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.recipe import load_recipe


def _recipe(tmp_path: Path, name: str = "simclr", **changes: dict) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", tmp_path, steps=2)
    recipe["callbacks"] = {}
    for section, values in changes.items():
        recipe[section] = {**(recipe.get(section) or {}), **values}
    path = tmp_path / "r.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


# (recipe changes, overrides, the start of the message after "ssl-toolkit: error: ")
CASES = {
    "out_dir is a file": ({}, ["out_dir={tmp}/afile"], "out_dir: {tmp}/afile is a file"),
    "out_dir under a file": ({}, ["out_dir={tmp}/afile/run"], "out_dir: cannot create {tmp}/afile/run"),
    "wandb online without login": ({"logger": {"wandb": True, "wandb_mode": "online"}}, [],
                                   "logger.wandb_mode: online needs a wandb login"),
    "precision 64": ({}, ["trainer.precision=64"], "trainer.precision: 64"),
    "precision 64-true": ({}, ["trainer.precision=64-true"], "trainer.precision: 64-true"),
    "hydra classes_per_batch": ({"data": {"num_classes": 4, "classes_per_batch": 8}}, [],
                                "data.classes_per_batch: 8 classes per batch, but the data has 4 classes"),
    "monitor nobody logs": ({"callbacks": {"rankme": {"num_samples": 32},
                                           "rankme_checkpoint": {"monitor": "val/rank_me", "mode": "max"}}}, [],
                            "callbacks.rankme_checkpoint.monitor: 'val/rank_me' is logged by no enabled callback"),
    "monitor of a disabled callback": ({"callbacks": {"rankme_checkpoint": {"monitor": "val/rankme"}}}, [],
                                       "callbacks.rankme_checkpoint.monitor: 'val/rankme' is logged by no enabled "
                                       "callback (enable callbacks.rankme)"),
    "nan lr": ({}, ["optimizer.lr=.nan"], "optimizer.lr: must be a finite number, got nan"),
    "inf temperature": ({}, ["head.loss.temperature=.inf"], "head.loss.temperature: must be a finite number"),
    "nan in a list": ({}, ["augment.crop_scale=[.nan,1.0]"], "augment.crop_scale: must be a finite number"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_is_one_line_exit_2_and_nothing_written(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    changes, overrides, message = CASES[case]
    name = "hydra" if "hydra" in case else "simclr"
    path = _recipe(tmp_path, name, **changes)
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no stored login
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["fit", str(path), *(o.format(tmp=tmp_path) for o in overrides)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: " + message.format(tmp=tmp_path)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not (tmp_path / "run").exists()


def test_out_dir_in_a_folder_without_write_permission(tmp_path: Path, capsys) -> None:
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("this user (root) may write into read-only folders")
    assert main(["fit", str(_recipe(tmp_path)), f"out_dir={tmp_path}/locked/run"]) == 2
    assert capsys.readouterr().err.startswith(f"ssl-toolkit: error: out_dir: cannot create {tmp_path}/locked/run")


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
