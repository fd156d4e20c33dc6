"""What a hostile new user tries, one kind per test (docs/what_can_go_wrong.md lists the kinds):
nothing the user has is lost or overwritten, nothing is leaked, nothing fails silently, and every
mistake is one line with exit 2 (before any work where it can be found before).

Each kind is tried with the input that first broke it and one more input of the same kind.
All runs are tiny (``test_resnet``, 16 px synthetic images, 1-2 steps); one trained run is shared.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.run.cli import main

SECRET = "tok-3f9a1c77e0d54b21"  # what an API token in the environment looks like
OFF = {"knn": None, "linear_probe": None, "rankme": None, "diagnostics": None, "rankme_checkpoint": None}


def recipe_file(tmp: Path, name: str = "tiny", optimizer: dict | None = None, **trainer: object) -> Path:
    """A 16 px, 2-step SimCLR recipe with a checkpoint per epoch and no evaluation callbacks;
    ``trainer`` keys replace the trainer's (None removes one)."""
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp)
    recipe["data"].update(num_samples=40, num_val_samples=16, batch_size=16, image_size=16)
    recipe["augment"]["size"] = 16
    recipe["head"].update(hidden_dim=64, out_dim=32)
    recipe["trainer"].update({"max_epochs": 2, "max_steps": -1, "limit_train_batches": 1, **trainer})
    recipe["trainer"] = {k: v for k, v in recipe["trainer"].items() if v is not None}
    recipe["optimizer"] = optimizer or recipe["optimizer"]
    recipe["callbacks"] = {**OFF, "checkpoint": {"every_n_epochs": 1, "save_top_k": -1}}
    recipe["out_dir"] = str(tmp / name)
    path = tmp / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained run (2 steps, checkpoints at steps 1 and 2 plus last.ckpt) whose logger.run_name
    (and, through it, logger.wandb_project) comes from the environment."""
    tmp = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_HOSTILE_TOKEN", SECRET)
        overrides = ["logger.run_name=${oc.env:SSL_HOSTILE_TOKEN}", "logger.wandb_project=${logger.run_name}"]
        assert main(["fit", str(recipe_file(tmp)), *overrides]) == 0
    return tmp / "tiny"


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """The captured stderr is one ``ssl-toolkit: error:`` line holding every needle; no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1] if err else ""
    assert line.startswith("ssl-toolkit: error: "), err
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. secrets from the environment ---------------------------------------------------------------
def test_1_environment_values_are_stored_as_expressions_never_in_clear(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, data in files_of(run).items():  # recipe.yaml, run.json, every checkpoint, the CSV
        assert SECRET.encode() not in data, name
    stored = yaml.safe_load((run / "recipe.yaml").read_text())
    assert stored["logger"]["run_name"] == "${oc.env:SSL_HOSTILE_TOKEN}"  # where it came from, not the value
    assert stored["logger"]["wandb_project"] == "${oc.env:SSL_HOSTILE_TOKEN}"  # through ${logger.run_name}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["recipe"]["logger"]["run_name"] == "${oc.env:SSL_HOSTILE_TOKEN}"
    # The user asks for the value: --store-env writes it (and the default says so when it does not).
    monkeypatch.setenv("SSL_HOSTILE_TOKEN", SECRET)
    path = recipe_file(tmp_path, max_epochs=1)
    assert main(["fit", "--store-env", str(path), "logger.run_name=${oc.env:SSL_HOSTILE_TOKEN}"]) == 0
    assert yaml.safe_load((tmp_path / "tiny" / "recipe.yaml").read_text())["logger"]["run_name"] == SECRET
    assert "note: logger.run_name" not in capsys.readouterr().out


def test_1b_out_dir_from_the_environment_is_kept_as_its_expression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSL_HOSTILE_SCRATCH", str(tmp_path / "scratch"))
    path = recipe_file(tmp_path, max_epochs=1)
    assert main(["fit", str(path), "out_dir=${oc.env:SSL_HOSTILE_SCRATCH}/run"]) == 0
    assert "note: out_dir come(s) from the environment" in capsys.readouterr().out
    run = tmp_path / "scratch" / "run"
    assert yaml.safe_load((run / "recipe.yaml").read_text())["out_dir"] == "${oc.env:SSL_HOSTILE_SCRATCH}/run"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["recipe"]["out_dir"] == "${oc.env:SSL_HOSTILE_SCRATCH}/run"
    # An offline tool on that checkpoint, with the variable unset, needs none of it: it works.
    monkeypatch.delenv("SSL_HOSTILE_SCRATCH")
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "e.safetensors")]) == 0


# --- 2. export --force never destroys training state -----------------------------------------------
def test_2_export_force_never_overwrites_a_checkpoint_or_leaves_a_tmp(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    before = files_of(run)
    assert main(["export", str(last), "--out", str(last), "--force"]) == 2
    one_line_error(capsys, "--out:", "checkpoint")
    assert main(["export", str(last), "--out", str(run / "checkpoints" / "other.ckpt"), "--force"]) == 2
    one_line_error(capsys, "--out:", ".ckpt")
    assert main(["export", str(last), "--out", str(run / "checkpoints"), "--force"]) == 2
    one_line_error(capsys, "--out:", "is a folder")
    assert files_of(run) == before  # nothing replaced, no .tmp left anywhere
    # --force does replace an earlier export
    out = tmp_path / "b.safetensors"
    assert main(["export", str(last), "--out", str(out)]) == 0
    assert main(["export", str(last), "--out", str(out), "--force"]) == 0


def test_2b_export_force_never_overwrites_any_other_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(notes), "--force"]) == 2
    one_line_error(capsys, "--out:", "not an earlier export")
    assert notes.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- 3. a resume with a changed optimizer / schedule value -----------------------------------------
def test_3_resume_with_a_lower_lr_applies_it_says_so_and_records_it(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(run, tmp_path / "run")
    old = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    old_lr = old["optimizer_states"][0]["param_groups"][0]["initial_lr"]
    args = ["fit", str(recipe_file(tmp_path, "r")), f"resume={run}", "trainer.max_epochs=3", "optimizer.lr=0.003"]
    assert main(args) == 0
    new = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert new["global_step"] == 3
    groups = new["optimizer_states"][0]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.003 * 16 / 256] * 2)  # lr per 256, scaled
    assert new["lr_schedulers"][0]["base_lrs"] == pytest.approx([0.003 * 16 / 256] * 2)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "resume: applied" in x)
    assert f"lr {old_lr:.6g} -> {0.003 * 16 / 256:.6g}" in line
    applied = json.loads((run / "resume-1.json").read_text())["applied"]
    assert applied["lr"] == {"checkpoint": pytest.approx(old_lr), "now": pytest.approx(0.003 * 16 / 256)}


def test_3b_resume_with_another_optimizer_is_refused_before_anything_is_written(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(run, tmp_path / "run")
    before = files_of(run)
    sgd = recipe_file(tmp_path, "r", optimizer={"name": "sgd", "lr": 0.1})
    args = ["fit", str(sgd), f"resume={run}", "trainer.max_epochs=3"]
    assert main(args) == 2
    one_line_error(capsys, "optimizer.name:", "'lars'", "'sgd'")
    assert files_of(run) == before


# --- 4. ~ in paths ----------------------------------------------------------------------------------
def test_4_out_dir_with_a_tilde_is_one_folder_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    path = recipe_file(tmp_path, max_epochs=1)
    assert main(["fit", str(path), "out_dir=~/x"]) == 0
    assert list(cwd.iterdir()) == []  # no ./~ folder
    names = set(files_of(home / "x"))
    assert {"recipe.yaml", "run.json", "checkpoints/last.ckpt", "csv/metrics.csv"} <= names
    # the CLI's own path arguments too, when the shell left them alone (quoted, or --out=~/...)
    assert main(["export", "~/x/checkpoints/last.ckpt", "--out=~/e.safetensors"]) == 0
    assert (home / "e.safetensors").is_file() and list(cwd.iterdir()) == []


def test_4b_resume_with_a_tilde_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    path = recipe_file(tmp_path, max_epochs=1)
    assert main(["fit", str(path), "out_dir=~/x"]) == 0
    assert main(["fit", str(path), "out_dir=~/x", "resume=~/x", "trainer.max_epochs=2"]) == 0
    assert (home / "x" / "resume-1.json").is_file() and not (tmp_path / "~").exists()


# --- 5. SIGHUP and a full disk -----------------------------------------------------------------------
SLOW = """
import sys, time
from pathlib import Path
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.global_step == 2:
        Path(sys.argv[1]).touch()
    time.sleep(0.3)

SSLModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[2:]))
"""


def test_5_sighup_saves_a_checkpoint_like_sigterm(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, max_epochs=20, limit_train_batches=None)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    marker = tmp_path / "training"
    proc = subprocess.Popen([sys.executable, "-c", SLOW, str(marker), "fit", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)  # the terminal closed
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGHUP, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("ssl-toolkit: stopped by SIGHUP after step "), line
    step = int(line.split("after step ")[1].split(";")[0])
    saved = torch.load(tmp_path / "tiny" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == step >= 2


def test_5_disk_full_while_saving_is_one_line_and_keeps_the_earlier_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl_toolkit.run.checkpoint_io as checkpoint_io

    saves, real_save = [], torch.save

    def save(obj: object, f: object) -> None:  # the first epoch's files fit; then the disk is full
        saves.append(f)
        if len(saves) > 2:
            f.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    assert main(["fit", str(recipe_file(tmp_path))]) == 2
    line = one_line_error(capsys, "No space left on device", "last good checkpoint", "resume with:")
    ckpts = tmp_path / "tiny" / "checkpoints"
    assert not list(ckpts.glob(".*.tmp")) and not list((tmp_path / "tiny").glob(".lock*"))
    kept = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["global_step"] == 1 and str(ckpts / "last.ckpt") in line


def test_5b_disk_full_at_the_start_and_during_export(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_write_text = Path.write_text

    def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if ".lock" in self.name:
            real_write_text(self, data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, data, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(Path, "write_text", write_text)
        assert main(["fit", str(recipe_file(tmp_path))]) == 2
    one_line_error(capsys, "out_dir:", "No space left on device")
    assert not [p for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".lock")]

    import ssl_toolkit.run.export as export_module

    def full(tensors: dict, path: object, metadata: dict) -> None:
        Path(str(path)).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export_module, "save_file", full)
    out = tmp_path / "e" / "b.safetensors"
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 2
    one_line_error(capsys, "No space left on device")
    assert list((tmp_path / "e").iterdir()) == []
