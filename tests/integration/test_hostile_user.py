"""What a hostile new user tries, one kind per test (docs/what_can_go_wrong.md lists the kinds):
nothing the user has is lost or overwritten, nothing is leaked, nothing fails silently, and every
mistake is one line with exit 2 (before any work where it can be found before).

Each kind is tried with the input that first broke it and one more input of the same kind.
All runs are tiny (``test_resnet``, 16 px synthetic images, 1-2 steps); one trained run is shared.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

import ssl_toolkit.run.fit  # noqa: F401 - Lightning's log handlers bind the session's stderr, not one test's capture
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


# --- 6. non-finite weights ------------------------------------------------------------------------
def broken_run(run: Path, dest: Path, value: float, which: str = "last.ckpt") -> Path:
    """A copy of ``run`` whose checkpoint ``which`` has one backbone weight set to ``value``."""
    dest = copy_run(run, dest)
    path = dest / "checkpoints" / which
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.startswith("backbone.") and k.endswith("weight"))
    ckpt["state_dict"][key].view(-1)[0] = value
    torch.save(ckpt, path)
    return dest


def test_6_nan_weights_are_refused_by_diagnose(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = broken_run(run, tmp_path / "run", float("nan"))
    assert main(["diagnose", str(bad / "checkpoints" / "last.ckpt"), "--num-images", "8"]) == 2
    one_line_error(capsys, "non-finite weights", "last.ckpt")
    assert not (bad / "diagnose").exists()


def test_6b_inf_weights_are_refused_by_knn_and_export_and_passed_over_by_select(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = broken_run(run, tmp_path / "run", float("inf"), "epoch=1-step=2.ckpt")
    ckpt = bad / "checkpoints" / "epoch=1-step=2.ckpt"
    assert main(["knn", str(ckpt), "--k", "5"]) == 2
    one_line_error(capsys, "non-finite weights")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "e.safetensors")]) == 2
    one_line_error(capsys, "non-finite weights")
    assert main(["select", str(bad), "--num-samples", "16"]) == 0
    out = capsys.readouterr()
    assert f"skipped {ckpt} (" in out.err and "non-finite weights" in out.err
    record = json.loads((bad / "selection.json").read_text())
    assert [Path(r["checkpoint"]).name for r in record["table"]] == ["epoch=0-step=1.ckpt"]  # last.ckpt is a copy
    assert record["skipped"][0]["checkpoint"] == str(ckpt)


# --- 7. select's numbers and runs ------------------------------------------------------------------
def test_7_select_records_the_subset_it_used_and_ranks_a_run_once(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "selection.json"
    assert main(["select", str(run), str(run), "--num-samples", "100000000", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "given more than once" in printed and "--num-samples 100000000 is more than the 40 train images" in printed
    record = json.loads(out.read_text())
    assert record["num_samples"] == 40 and record["num_samples_asked"] == 100000000
    assert len(record["table"]) == 2  # steps 1 and 2, once each


def test_7b_the_same_run_spelled_two_ways_is_ranked_once(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(run.parent)
    out = tmp_path / "selection.json"
    assert main(["select", str(run) + "/", f"./{run.name}", "--num-samples", "16", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["table"]) == 2


def test_7c_diagnose_diagnoses_a_checkpoint_given_twice_once(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # found re-trying the list
    last = str(run / "checkpoints" / "last.ckpt")
    assert main(["diagnose", last, last, "--num-images", "8", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "given more than once" in out and sum(" AUC proj " in line for line in out.splitlines()) == 1


# --- 8. a run that trains nothing ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.max_steps=0", "trains nothing"),
        ("trainer.max_epochs=0", "trains nothing"),
        ("trainer.limit_train_batches=0", "trains nothing"),
        ("trainer.max_time=00:00:00:00", "trains nothing"),  # found re-trying: exit 0, 0 steps
        ("trainer.limit_train_batches=0.001", "less than one batch"),  # found re-trying: a traceback
    ],
)
def test_8_zero_steps_or_epochs_is_refused_before_a_run_folder_exists(
    override: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(recipe_file(tmp_path)), override]) == 2
    one_line_error(capsys, override.split("=")[0] + ":", needle)
    assert not (tmp_path / "tiny").exists()


# --- 9. the summary names only files that exist ----------------------------------------------------
@pytest.mark.parametrize("override", ["trainer.fast_dev_run=true", "logger.csv=false"])
def test_9_the_summary_never_names_a_log_that_was_not_written(
    override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(recipe_file(tmp_path)), override]) == 0
    logs = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("logs:"))
    assert "metrics.csv" not in logs and "(none written" in logs
    assert not list((tmp_path / "tiny").rglob("metrics.csv"))


# --- 10. classes without images --------------------------------------------------------------------
def png(colour: tuple[int, int, int], size: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def data_recipe(tmp: Path, data: dict) -> Path:
    path = recipe_file(tmp, max_epochs=1)
    recipe = OmegaConf.to_container(OmegaConf.load(path))
    recipe["data"] = {"image_size": 16, "batch_size": 4, "num_workers": 0, **data}
    recipe["callbacks"] = {**OFF, "checkpoint": {}}
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def test_10_file_list_labels_0_and_7_say_that_six_classes_are_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = []
    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(png((30 * i, 10, 200)))
        rows.append(f"{i}.png\t{0 if i < 4 else 7}")
    (tmp_path / "train.txt").write_text("\n".join(rows) + "\n")
    path = data_recipe(
        tmp_path, {"name": "file_list", "root": str(tmp_path), "train_list": str(tmp_path / "train.txt")}
    )
    with caplog.at_level("WARNING"):
        assert main(["fit", str(path)]) == 0
    said = caplog.text
    assert "8 classes" in said and "6 of them have no image: 1, 2, 3, 4, 5, 6" in said


def write_tar(path: Path, samples: list[tuple[bytes, str | None]]) -> None:
    """A WebDataset shard: sample k is ``k.png`` (+ ``k.cls`` when its label is not None)."""
    with tarfile.open(path, "w") as tar:
        for k, (image, label) in enumerate(samples):
            for name, data in [(f"{k:06d}.png", image)] + ([(f"{k:06d}.cls", label.encode())] if label else []):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def shards(tmp: Path, train: list[tuple[bytes, str | None]], val: list | None = None) -> dict:
    write_tar(tmp / "train-000000.tar", train)
    spec = {"name": "webdataset", "train_shards": str(tmp / "train-000000.tar"), "shuffle_buffer": 4}
    if val is not None:
        write_tar(tmp / "val-000000.tar", val)
        spec["val_shards"] = str(tmp / "val-000000.tar")
    return spec


def test_10b_shard_labels_0_and_3_say_that_two_classes_are_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = shards(tmp_path, [(png((20 * i, 0, 0)), "0" if i < 4 else "3") for i in range(8)])
    with caplog.at_level("WARNING"):
        assert main(["fit", str(data_recipe(tmp_path, spec))]) == 0
    assert "4 classes (0 to the largest label); 2 of them have no sample: 1, 2" in caplog.text


# --- 11. shards get the folders' up-front checks ---------------------------------------------------
GOOD8 = [(png((20 * i, 50, 90)), "0" if i % 2 else "1") for i in range(8)]


@pytest.mark.parametrize(
    ("train", "val", "needles"),
    [
        ([*GOOD8[:7], (png((1, 2, 3)), "-5")], None, ["train_shards:", "not a class index >= 0", "'-5'"]),
        ([*GOOD8[:6], (png((1, 2, 3)), None), (png((4, 5, 6)), None)], None, ["train_shards:", "6 of 8 samples have"]),
        ([*GOOD8[:7], (b"not an image at all", "1")], None, ["max_bad_fraction:", "1 of 8", "not an image"]),
        (GOOD8, [(png((9, 9, 9)), None)] * 4, ["val_shards:", "labelled and unlabelled"]),  # the second input
    ],
    ids=["negative-cls", "mixed-labels", "undecodable", "labelled-train-unlabelled-val"],
)
def test_11_bad_shards_are_one_line_before_training(
    train: list, val: list | None, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(data_recipe(tmp_path, shards(tmp_path, train, val)))]) == 2
    one_line_error(capsys, *needles)
    assert not (tmp_path / "tiny").exists()


def test_11b_bad_images_within_max_bad_fraction_are_listed_and_never_reach_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = png((7, 7, 7), size=64)[:70]
    spec = shards(tmp_path, [*GOOD8, (truncated, "1")], [*GOOD8[:4], (b"", "0")])
    spec["max_bad_fraction"] = 0.5
    assert main(["fit", str(data_recipe(tmp_path, spec))]) == 0
    bad = (tmp_path / "tiny" / "bad_files.txt").read_text()
    assert "000008.png\tcorrupt" in bad and "000004.png\tempty file" in bad
    capsys.readouterr()
    assert main(["knn", str(tmp_path / "tiny" / "checkpoints" / "last.ckpt"), "--k", "3"]) == 0  # no PIL error
    assert "(epoch 0, step 1, 4 val images)" in capsys.readouterr().out


# --- 12. offline verbs on a read-only run folder ---------------------------------------------------
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` cannot be written into, for root too (``chattr +i``), or by mode bits otherwise."""
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("neither chattr nor a non-root user: a read-only folder cannot be made")
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("verb", ["knn", "probe"])
def test_12_knn_and_probe_on_a_read_only_run_stop_before_the_work(
    verb: str, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl_toolkit.eval.probe as probe_module

    ro = copy_run(run, tmp_path / "run")
    monkeypatch.setattr(probe_module, "embed_split", lambda *a, **k: pytest.fail("embedded before the check"))
    with read_only(ro):
        assert main([verb, str(ro / "checkpoints" / "last.ckpt")]) == 2
    one_line_error(capsys, "eval folder:", "cannot write into")


def test_12b_select_and_diagnose_into_a_read_only_folder(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = copy_run(run, tmp_path / "run")
    with read_only(ro):
        assert main(["select", str(ro), "--num-samples", "16"]) == 2
        one_line_error(capsys, "--out:", "cannot write into")
        assert main(["diagnose", str(ro / "checkpoints" / "last.ckpt"), "--num-images", "8"]) == 2
        one_line_error(capsys, "--out:", "cannot write into")


# --- 13. checkpoints with a broken recipe, unreadable ones among good ones --------------------------
def test_13_a_checkpoint_with_an_empty_recipe_is_one_line_for_every_verb(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = copy_run(run, tmp_path / "run")
    for p in (dest / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        ckpt["recipe"] = {}
        torch.save(ckpt, p)
    last = str(dest / "checkpoints" / "last.ckpt")
    for args in (["knn", last], ["probe", last], ["diagnose", last], ["export", last], ["select", str(dest)]):
        assert main(args) == 2, args
        one_line_error(capsys, "incomplete recipe", "no backbone, head, augment, data, optimizer section")


def test_13b_select_ranks_past_a_truncated_and_a_pickled_code_checkpoint_and_names_them(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = copy_run(run, tmp_path / "run")
    first = dest / "checkpoints" / "epoch=0-step=1.ckpt"
    first.write_bytes(first.read_bytes()[:5000])  # a copy cut short
    torch.save({"state_dict": {}, "hook": print}, dest / "checkpoints" / "evil.ckpt")  # pickled code
    assert main(["select", str(dest), "--num-samples", "16"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {first} (truncated" in err
    assert "evil.ckpt (not loadable (holds objects that torch.load(weights_only=True) refuses: print))" in err
    record = json.loads((dest / "selection.json").read_text())
    assert {Path(r["checkpoint"]).name for r in record["table"]} == {"epoch=1-step=2.ckpt"}


# --- 14. values that divided by zero, devices that are not there, unwritable shard folders -----------
@pytest.mark.parametrize("override", ["trainer.val_check_interval=0", "trainer.check_val_every_n_epoch=0"])
def test_14_zero_evaluation_intervals_are_one_line_before_training(
    override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(recipe_file(tmp_path)), override]) == 2
    one_line_error(capsys, override.split("=")[0] + ":", "must be positive")
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["knn", "{ckpt}", "--device", "nonsense"], "is not a torch device"),
        (["knn", "{ckpt}", "--device", "cuda:7"], "is not available"),
        (["diagnose", "{ckpt}", "--device", "cuda:7"], "is not available"),
    ],  # fmt: skip
)
def test_14b_a_device_that_is_not_there_is_one_line(
    args: list[str], needle: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main([a.replace("{ckpt}", ckpt) for a in args]) == 2
    one_line_error(capsys, "--device:", needle)


def test_14c_write_shards_into_a_file_or_read_only_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        (images / f"{i}.png").write_bytes(png((i, 2, 3)))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ro").mkdir()
    tool = str(REPO / "tools" / "write_shards.py")

    def write_shards(out: Path) -> str:
        monkeypatch.setattr(sys, "argv", [tool, str(images), str(out)])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(tool, run_name="__main__")
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        return err

    assert "is a file" in write_shards(tmp_path / "afile")
    with read_only(tmp_path / "ro"):
        assert "cannot write into" in write_shards(tmp_path / "ro" / "s")


# --- 15. every script in tools/ is a command -------------------------------------------------------
TOOLS = sorted(p.name for p in (REPO / "tools").glob("*.py"))


@pytest.mark.parametrize("tool", TOOLS)
def test_15_every_tool_takes_help_and_answers_a_wrong_argument_in_one_line(
    tool: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(REPO / "tools" / tool)
    for argv, code in (([path, "--help"], 0), ([path, "--no-such-option"], 2)):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(path, run_name="__main__")
        assert stop.value.code == code, (tool, argv)
        out = capsys.readouterr()
        if code == 0:
            assert out.out.startswith("usage:"), out
        else:
            assert out.err.count("\n") == 1 and ": error: " in out.err and "Traceback" not in out.err, out.err


def test_15b_baselines_with_no_recipe_or_a_wrong_path_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(REPO / "tools" / "baselines.py")
    for argv in ([path], [path, "/nonexistent/recipe.yaml"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(path, run_name="__main__")
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("baselines.py: error: "), err


def test_6c_finite_weights_with_non_finite_features_are_refused_by_probe(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl_toolkit.eval.probe as probe_module

    embed = probe_module.embed_split

    def overflowing(module: torch.nn.Module, loader: object) -> object:  # features that overflow to Inf
        split = embed(module, loader)
        split.feats[0, 0] = float("inf")
        return split

    monkeypatch.setattr(probe_module, "embed_split", overflowing)
    assert main(["probe", str(run / "checkpoints" / "last.ckpt"), "--epochs", "2"]) == 2
    one_line_error(capsys, "features: 1 of the 40 images of the train split embed to NaN/Inf")
    assert not (run / "eval").exists()
