"""Recipe values out of range fail before training: exit code 2, one line naming the key, and
nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.run.cli import main

BAD_OVERRIDES = [
    ("optimizer.lr=-0.1", "optimizer.lr: must be > 0, got -0.1"),
    ("optimizer.lr=0", "optimizer.lr: must be > 0"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay: must be >= 0"),
    ("optimizer.momentum=1.5", "optimizer.momentum: must be in [0, 1)"),
    ("optimizer.trust_coefficient=0", "optimizer.trust_coefficient: must be > 0"),
    ("head.loss.temperature=0", "head.loss.temperature: must be > 0, got 0"),
    ("head.loss.temperature=-0.5", "head.loss.temperature: must be > 0"),
    ("head.hidden_dim=0", "head.hidden_dim: must be an int >= 1"),
    ("head.out_dim=-1", "head.out_dim: must be an int >= 1"),
    ("augment.size=0", "augment: size must be > 0"),
    ("augment.crop_scale=[0.5,0.2]", "augment: crop_scale must satisfy 0 < low <= high"),
    ("augment.jitter_p=2", "augment: jitter_p must be in [0, 1]"),
    ("data.batch_size=0", "data.batch_size: must be an int >= 1, got 0"),
    ("data.batch_size=1000", "data.batch_size: 1000 is larger than the 64 training images"),
    ("data.num_workers=-1", "data.num_workers: must be an int >= 0, got -1"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs: must be >= 0"),
    ("callbacks.knn.k=0", "callbacks.knn.k: must be an int >= 1"),
    ("callbacks.checkpoint.every_n_train_steps=-1", "callbacks.checkpoint: Invalid value for every_n_train_steps=-1"),
    ("trainer.max_epochs=-5", "trainer.max_epochs: -5 trains nothing; give a positive number, or -1 for no limit"),
    ("trainer.max_steps=-5", "trainer.max_steps: -5 trains nothing; give a positive number, or -1 for no limit"),
    ("trainer.devices=0", "trainer: `Trainer(devices=0)` value is not a valid input"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches: must be an int >= 1"),
    ("seed=-1", "seed: must be in [0, 2**32), got -1"),
    # batch_size is per process: 16 x 8 processes cannot be fed by 64 images
    ("trainer.devices=8", "data.batch_size: 16 per process x 8 processes needs 128 training images per step"),
    ("resume=/no/such/run", "resume: '/no/such/run' is neither auto, none, a checkpoint file nor a run folder"),
    # recipes name classes from literal tables only: no imports, no code
    ("head.name=os.system", "head.name: unknown 'os.system'"),
    ("head.loss.name=builtins.eval", "head.loss.name: unknown 'builtins.eval'"),
]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ranges")
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp, steps=1)
    recipe["callbacks"] = {"knn": {"k": 5}, "checkpoint": {}}
    path = tmp / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES)
def test_out_of_range_value_is_one_line_naming_the_key(recipe: Path, tmp_path: Path, capsys, override, message) -> None:
    assert main(["fit", str(recipe), override, f"out_dir={tmp_path / 'out'}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"ssl-toolkit: error: {err[0].removeprefix('ssl-toolkit: error: ')}"] and message in err[0]
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_console_script_prints_only_that_line(recipe: Path, tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("ssl-toolkit")
    env = {**os.environ, "WANDB_MODE": "offline"}
    res = subprocess.run([str(cli), "fit", str(recipe), "trainer.devices=8", f"out_dir={tmp_path / 'out'}"],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data.batch_size: 16 per process x 8 processes" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()
