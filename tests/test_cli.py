"""`ssl-toolkit` end to end: fit on synthetic data and Fashion-MNIST, outputs, clean errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY_BACKBONE, tiny_recipe
from ssl_toolkit.run.cli import main

DEMO = REPO / "recipes" / "fashion_mnist" / "simclr.yaml"
CLI = Path(sys.executable).with_name("ssl-toolkit")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_fit_synthetic_writes_checkpoint_recipe_and_logs(tmp_path: Path, capsys) -> None:
    recipe = tiny_recipe(DEMO, tmp_path, steps=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    saved = OmegaConf.to_container(OmegaConf.load(run / "recipe.yaml"))
    assert saved["backbone"]["name"] == TINY_BACKBONE and saved["out_dir"] == str(run)
    meta = json.loads((run / "run.json").read_text())
    assert len(meta["git_commit"].split("-")[0]) == 40
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(0 < v < 20 for v in losses)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4 and any(k.startswith("backbone.") for k in ckpt["state_dict"])
    assert ckpt["recipe"] == saved  # a checkpoint alone can rebuild its model
    out = capsys.readouterr().out
    assert "checkpoint:" in out and str(run / "checkpoints" / "last.ckpt") in out

    # A second run with the same out_dir goes next to it; the first run is left as it was.
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert main(["fit", str(path)]) == 0
    assert (tmp_path / "run_1" / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


def test_issue_example_command_on_fashion_mnist(tmp_path: Path) -> None:
    # The command from the foundation issue, as a user types it (wandb offline included), plus a
    # data slice so the end-of-epoch evaluation callbacks stay fast in the test.
    issue_command = ["backbone.name=resnet10t", "data.batch_size=32", "trainer.max_steps=3", "out_dir=runs/try"]
    slice_ = ["data.num_workers=0", "data.train_samples=2048", "data.val_samples=512"]
    res = run_cli("fit", str(DEMO), *issue_command, *slice_, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "try"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "recipe.yaml").is_file()
    assert any((run / "wandb").glob("offline-run-*"))
    assert "final train/loss" in res.stdout


def test_fit_on_a_fashion_mnist_slice_with_tiny_model(tmp_path: Path) -> None:
    recipe = tiny_recipe(DEMO, tmp_path, steps=3, keep_data=True)
    recipe["data"].update(train_samples=256, val_samples=64, batch_size=32, num_workers=0)
    path = tmp_path / "fm.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "missing.yaml"], "recipe: missing.yaml does not exist"),
        (["fit", str(DEMO), "head.temprature=0.3"], "head.temprature: unknown key"),
        (["fit", str(DEMO), "data.batch_size=big"], "data.batch_size: expected int"),
        (["fit", str(DEMO), "data.root=/no/such/dir"], "data.root: /no/such/dir"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    res = run_cli(*args, f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and message in lines[0] and lines[0].startswith("ssl-toolkit: error:")
    assert not (tmp_path / "out").exists()  # nothing started


def test_help_and_recipes_list() -> None:
    res = subprocess.run([str(CLI), "fit", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "key=value" in res.stdout
    res = subprocess.run([str(CLI), "recipes"], capture_output=True, text=True)
    assert "fashion_mnist/simclr.yaml" in res.stdout.split()
