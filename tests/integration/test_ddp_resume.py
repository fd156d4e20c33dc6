"""Exact resume with 2 DDP processes (torchrun, gloo, CPU): both processes killed with SIGKILL
mid-epoch and resumed with ``resume=auto`` end bit for bit with the weights of an uninterrupted
2-process run. Each process draws its own augmentations and MoCHi mixtures, so this holds only if
every process gets its own random state back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from run.test_resume import _assert_same_tensors, _load
from two_processes import torchrun

from conftest import REPO, tiny_recipe

KILLER = """
import os, signal, sys
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.global_step == int(os.environ["KILL_AFTER_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)

SSLModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[1:]))
"""


def _recipe(tmp_path: Path, name: str) -> Path:
    # 64 images, 8 per process and step: 4 steps per epoch; a checkpoint every 2 steps.
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "mochi.yaml", tmp_path, steps=8)
    recipe["head"].update(queue_size=64, num_hard=16, num_mixed=8, num_query_mixed=4, mix_start_step=2)
    recipe["data"]["batch_size"] = 8
    recipe["trainer"].update(max_epochs=3, deterministic=True, devices=2, strategy="ddp", enable_model_summary=False)
    recipe["callbacks"] = {"checkpoint": {"every_n_train_steps": 2, "save_top_k": -1}}
    recipe["out_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.mark.distributed
def test_two_process_sigkill_then_resume_auto_matches_uninterrupted_two_process_run(tmp_path: Path) -> None:
    cli = ["-m", "ssl_toolkit.run.cli", "fit"]
    torchrun([*cli, str(_recipe(tmp_path, "straight"))], cwd=tmp_path)
    reference = _load(tmp_path / "straight" / "checkpoints" / "last.ckpt")

    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = _recipe(tmp_path, "killed")
    res = torchrun([str(killer), "fit", str(killed)], cwd=tmp_path, env={"KILL_AFTER_STEP": "5"}, check=False)
    assert res.returncode != 0
    saved = _load(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 4 and saved["SyntheticData"] == {"epoch": 1, "batches": 0}
    states = saved["callbacks"]["RNGState"]["ranks"]  # one random state per process, all different
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])

    torchrun([*cli, str(killed), "resume=auto"], cwd=tmp_path)
    resumed = _load(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 8
    _assert_same_tensors(resumed["state_dict"], reference["state_dict"], "state_dict")  # bit for bit
    _assert_same_tensors(resumed["optimizer_states"], reference["optimizer_states"], "optimizer")
