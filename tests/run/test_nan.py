"""A NaN/Inf loss stops ``fit`` with one line naming the step; the last good checkpoint is kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.heads.simclr import SimCLRHead
from ssl_toolkit.run.cli import main

BAD_STEP = 5  # the 5th optimizer step (checkpoint names count the same way: step=5)


@pytest.fixture
def broken_head(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    forward = SimCLRHead.forward

    def bad_forward(self, views, batch):  # noqa: ANN001, ANN202
        out = forward(self, views, batch)
        if batch.step == BAD_STEP - 1:  # BatchInfo.step counts the steps done before this one
            out.loss = out.loss * float(request.param)
        return out

    monkeypatch.setattr(SimCLRHead, "forward", bad_forward)


def _recipe(tmp_path: Path, callbacks: dict) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=12)
    recipe["trainer"]["max_epochs"] = 4
    recipe["callbacks"] = {"checkpoint": {"every_n_train_steps": 2}, **callbacks}
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.mark.parametrize("broken_head", ["nan", "inf"], indirect=True)
@pytest.mark.usefixtures("broken_head")
def test_non_finite_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path: Path, capsys) -> None:
    # Checked every 10 steps by default, and before every save: the save of step 6 is refused.
    assert main(["fit", str(_recipe(tmp_path, {}))]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ssl-toolkit:")]
    ckpts = tmp_path / "run" / "checkpoints"
    assert len(err) == 1
    value = "nan" if "nan" in err[0] else "inf"
    assert err[0] == (
        f"ssl-toolkit: error: train/loss is {value} at step {BAD_STEP} (epoch 1); training stopped; "
        f"last good checkpoint: {ckpts / 'last.ckpt'} (step 4)"
    )
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]  # no temp files


@pytest.mark.parametrize("broken_head", ["nan"], indirect=True)
@pytest.mark.usefixtures("broken_head")
def test_check_every_step_stops_right_after_the_bad_step(tmp_path: Path, capsys) -> None:
    recipe = _recipe(tmp_path, {"finite_loss": {"check_every_n_steps": 1}})
    assert main(["fit", str(recipe)]) == 1
    assert f"at step {BAD_STEP} (epoch 1)" in capsys.readouterr().err
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    steps = [int(line.split(",")[1]) for line in metrics[1:]]  # logged from 0: row BAD_STEP = the next step
    losses = [float(line.split(",")[3]) for line in metrics[1:] if line.split(",")[3]]
    assert max(steps) < BAD_STEP and all(math.isfinite(v) for v in losses)


def test_weights_broken_by_the_last_update_stop_before_the_save(tmp_path: Path, capsys, monkeypatch) -> None:
    """A finite loss whose update breaks the weights (e.g. a non-finite gradient): the save that
    follows is refused naming the parameter, and the checkpoint before it stays the newest."""
    from ssl_toolkit.module import SSLModule

    after = SSLModule.after_optimizer_step
    BROKEN = "layer1.0.conv1.weight"  # noqa: N806

    def breaking_step(self, step: int, total_steps: int) -> None:  # noqa: ANN001
        after(self, step, total_steps)
        if step == 5:  # the update of step 6 leaves a NaN in one weight; its loss was finite
            with torch.no_grad():
                dict(self.backbone.named_parameters())[BROKEN].view(-1)[0] = float("nan")

    monkeypatch.setattr(SSLModule, "after_optimizer_step", breaking_step)
    assert main(["fit", str(_recipe(tmp_path, {}))]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ssl-toolkit:")]
    ckpts = tmp_path / "run" / "checkpoints"
    assert (
        len(err) == 1
        and f"the weights (backbone.{BROKEN}) after the last optimizer step is not finite at step 6" in err[0]
    ), err
    assert f"last good checkpoint: {ckpts / 'last.ckpt'} (step 4)" in err[0]
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
