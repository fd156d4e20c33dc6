"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with ``resume=auto`` ends with the
same weights, optimizer state, EMA teacher and queue as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.data.resumable import ResumableSampler
from ssl_toolkit.errors import RecipeError
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.resume import find_resume
from ssl_toolkit.run_folder import run_folders

# Killed right after optimizer step K (a checkpoint every 2 steps, 64 images / batch 16 = 4 steps
# per epoch): K = 7 resumes from step 6, in the middle of epoch 1; K = 9 from step 8, the end of
# epoch 1 (its loader position is "epoch 2, batch 0").
KILLER = """
import os, signal, sys
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main
from ssl_toolkit.data.resumable import ResumableSampler

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.global_step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)

SSLModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[2:]))
"""


def _recipe(tmp_path: Path, name: str) -> Path:
    # MoCHi: EMA teacher backbone, momentum projector, key queue and hard-negative mixing (from
    # step 4), LARS momentum and a warm-up/cosine schedule: all of it has to come back on resume.
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "mochi.yaml", tmp_path, steps=10)
    recipe["head"].update(queue_size=64, num_hard=16, num_mixed=8, num_query_mixed=4, mix_start_step=4)
    recipe["trainer"].update(max_epochs=3, deterministic=True)
    recipe["callbacks"] = {"checkpoint": {"every_n_train_steps": 2}}
    recipe["out_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_tensors(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("straight")
    assert main(["fit", str(_recipe(tmp, "straight"))]) == 0
    return _load(tmp / "straight" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize(("kill_after", "resume_epoch"), [(7, 1), (9, 2)])  # mid-epoch; right after an epoch
def test_sigkill_then_resume_auto_matches_uninterrupted_run(
    tmp_path: Path, reference: dict, kill_after: int, resume_epoch: int
) -> None:
    killed = _recipe(tmp_path, "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    # 600 s: the killed fit timed out at 120 s on a machine shared with other heavy jobs.
    res = subprocess.run([sys.executable, "-c", KILLER, str(kill_after), "fit", str(killed)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == -9, res.stderr[-2000:]  # SIGKILL
    run = tmp_path / "killed"
    saved = _load(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == kill_after - 1
    assert saved["SyntheticData"] == {"epoch": resume_epoch, "batches": (kill_after - 1) % 4}  # loader position
    before = {p: p.read_bytes() for p in [run / "recipe.yaml", run / "run.json", run / "csv" / "metrics.csv"]}

    assert main(["fit", str(killed), "resume=auto"]) == 0
    resumed = _load(run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 10
    assert any(k.startswith("teacher.") for k in resumed["state_dict"])  # EMA backbone
    assert any("queue" in k for k in resumed["state_dict"])
    _assert_same_tensors(resumed["state_dict"], reference["state_dict"], "state_dict")  # bit for bit
    _assert_same_tensors(resumed["optimizer_states"], reference["optimizer_states"], "optimizer")
    assert resumed["lr_schedulers"][0]["last_epoch"] == reference["lr_schedulers"][0]["last_epoch"] == 10
    curves = resumed["callbacks"]["Curves"]  # callback state: the loss history has every step, once
    assert curves["loss_steps"] == list(range(1, 11)) and curves == reference["callbacks"]["Curves"]

    # Same folder, nothing lost: earlier files untouched, the resume recorded and logged apart.
    assert not (tmp_path / "killed_1").exists()
    assert all(p.read_bytes() == data for p, data in before.items())
    record = json.loads((run / "resume-1.json").read_text())
    assert record["step"] == kill_after - 1 and record["checkpoint"].endswith("last.ckpt")
    steps = [
        int(line.split(",")[1]) for line in (run / "csv" / "resume-1" / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps[0] == kill_after - 1 and max(steps) == 9  # logged from 0: the steps after the checkpoint


def test_resume_auto_without_checkpoint_starts_a_new_run(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text("{}")  # a run that died before its first checkpoint
    assert find_resume("auto", tmp_path / "out") is None
    assert find_resume("none", tmp_path / "out") is None
    assert run_folders(tmp_path / "out") == [tmp_path / "out"]


def test_resume_picks_newest_run_folder_and_most_advanced_checkpoint(tmp_path: Path) -> None:
    state = {"state_dict": {"w": torch.zeros(1)}}
    for folder, files in {"out": {"last.ckpt": 4}, "out_2": {"a.ckpt": 3, "last.ckpt": 3, "b.ckpt": 2},
                          "out_10": {}}.items():  # fmt: skip
        (tmp_path / folder / "checkpoints").mkdir(parents=True)
        for name, step in files.items():
            torch.save({**state, "global_step": step, "epoch": 0}, tmp_path / folder / "checkpoints" / name)
    (tmp_path / "out_2" / "checkpoints" / "broken.ckpt").write_bytes(b"\x00" * 10)  # skipped
    point = find_resume("auto", tmp_path / "out")
    assert point.run_dir == tmp_path / "out_2" and point.checkpoint.name == "last.ckpt" and point.step == 3
    assert [p.name for p in run_folders(tmp_path / "out")] == ["out", "out_2", "out_10"]
    assert find_resume(str(tmp_path / "out" / "checkpoints" / "last.ckpt"), "x").run_dir == tmp_path / "out"
    with pytest.raises(RecipeError, match="^resume: .*out_10 holds no readable checkpoint"):
        find_resume(str(tmp_path / "out_10"), "x")
    with pytest.raises(RecipeError, match="^resume: 'nowhere' is neither auto, none"):
        find_resume("nowhere", "x")


def test_sampler_order_depends_on_seed_and_epoch_and_skips_trained_batches() -> None:
    data = list(range(40))
    perm = [torch.randperm(40, generator=torch.Generator().manual_seed(7 + e)).tolist() for e in range(3)]
    sampler = ResumableSampler(data, batch_size=4, seed=7)
    assert list(sampler) == perm[0]
    sampler.set_epoch(2)
    assert list(sampler) == perm[2] and len(sampler) == 40
    resumed = ResumableSampler(data, batch_size=4, seed=7, resume={"epoch": 1, "batches": 3})
    assert list(resumed) == perm[1][12:] and len(resumed) == 40  # len: Lightning counts the skipped batches
    assert list(resumed) == perm[1]  # the skip applies to one pass only
    ended = ResumableSampler(data, batch_size=4, seed=7, resume={"epoch": 1, "batches": 10})
    assert list(ended) == perm[2]
