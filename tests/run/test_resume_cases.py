"""Resume through the CLI when things are not tidy: unreadable checkpoints (named, never a silent new
run), a moved or copied run folder, the best-RankMe tracker across a resume, extending a finished
run, and two processes on one run folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from run.test_resume import _assert_same_tensors, _load

from conftest import REPO, tiny_recipe
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.lock import LOCK_NAME
from ssl_toolkit.run.resume import checkpoint_problem


def _write(tmp_path: Path, name: str = "r", steps: int = 2, epochs: int = 3, **callbacks: dict) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=steps)
    recipe["scheduler"] = None  # an extended run can then equal a longer uninterrupted one bit for bit
    recipe["trainer"].update(max_epochs=epochs, deterministic=True)
    recipe["callbacks"] = callbacks or {"checkpoint": {"every_n_train_steps": 2, "save_top_k": -1}}
    recipe["out_dir"] = str(tmp_path / "run")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def _error(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ssl-toolkit:")]
    assert len(err) == 1, err
    return err[0]


def test_each_unreadable_checkpoint_has_its_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "global_step": 1}, good)
    files = {
        "empty.ckpt": (b"", "empty file"),
        "truncated.ckpt": (good.read_bytes()[:200], "truncated"),
        "notes.ckpt": (b"shopping list\n", "not a checkpoint (not a PyTorch file)"),
    }
    torch.save({"state_dict": {}, "x": Path("p")}, tmp_path / "foreign.ckpt")  # weights_only refuses PosixPath
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "nostate.ckpt")
    assert checkpoint_problem(good) is None
    for name, (_, why) in files.items():
        assert checkpoint_problem(tmp_path / name).startswith(why), name
    assert checkpoint_problem(tmp_path / "nostate.ckpt") == "not a checkpoint (no state_dict)"
    assert checkpoint_problem(tmp_path / "foreign.ckpt").startswith("not loadable (")


def test_resume_auto_names_skipped_checkpoints_and_refuses_when_none_is_readable(tmp_path, capsys) -> None:
    recipe = _write(tmp_path, steps=4)
    assert main(["fit", str(recipe)]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "last.ckpt").write_bytes(b"")  # the newest state lost; step=2 and step=4 remain
    (ckpts / "epoch=0-step=4.ckpt").write_bytes(b"")
    capsys.readouterr()
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=6"]) == 0
    err = capsys.readouterr().err
    assert f"ssl-toolkit: resume: skipped {ckpts / 'epoch=0-step=4.ckpt'} (empty file)" in err
    assert f"ssl-toolkit: resume: skipped {ckpts / 'last.ckpt'} (empty file)" in err
    assert json.loads((tmp_path / "run" / "resume-1.json").read_text())["step"] == 2

    files = list(ckpts.glob("*.ckpt"))
    for path in files:
        path.write_bytes(b"")
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=8"]) == 2
    line = _error(capsys)
    assert line.startswith(f"ssl-toolkit: error: resume: {ckpts} holds {len(files)} checkpoint file(s) and none is")
    assert "last.ckpt: empty file" in line and "resume=none" in line
    assert not (tmp_path / "run_1").exists() and not (tmp_path / "run" / "resume-2.json").exists()
    assert main(["fit", str(recipe), "resume=none"]) == 0  # an explicit new run still works
    assert (tmp_path / "run_1" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("how", ["move", "copy"])
def test_moved_or_copied_run_folder_goes_on_in_last_ckpt(tmp_path: Path, capsys, how: str) -> None:
    recipe = _write(tmp_path, steps=2)
    assert main(["fit", str(recipe)]) == 0
    new = tmp_path / "elsewhere" / "run"
    new.parent.mkdir()
    (shutil.move if how == "move" else shutil.copytree)(tmp_path / "run", new)
    capsys.readouterr()
    assert main(["fit", str(recipe), f"resume={new}", "trainer.max_steps=4"]) == 0
    assert f"checkpoint:       {new / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    names = sorted(p.name for p in (new / "checkpoints").iterdir())
    assert names == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"]  # no last-v1.ckpt
    assert _load(new / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_best_rankme_tracker_survives_resume_one_file_chosen_by_score(tmp_path: Path, capsys) -> None:
    callbacks = {
        "rankme": {"num_samples": 32},
        "checkpoint": {"every_n_epochs": 1, "save_top_k": -1},
        "rankme_checkpoint": {"monitor": "val/rankme", "mode": "max", "save_top_k": 1,
                              "filename": "best-rankme-{epoch}", "every_n_epochs": 1},
    }  # fmt: skip
    recipe = _write(tmp_path, steps=-1, epochs=2, **callbacks)
    assert main(["fit", str(recipe)]) == 0
    last = _load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    tracker = next(v for k, v in last["callbacks"].items() if "val/rankme" in k)
    assert tracker["best_model_score"] is not None  # last.ckpt written after the tracker's update
    capsys.readouterr()
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_epochs=4"]) == 0
    out = capsys.readouterr().out
    best = sorted((tmp_path / "run" / "checkpoints").glob("best-rankme-*.ckpt"))
    assert len(best) == 1, best
    scores = {}  # epoch -> val/rankme from both logs
    for csv in [tmp_path / "run" / "csv" / "metrics.csv", tmp_path / "run" / "csv" / "resume-1" / "metrics.csv"]:
        rows = [line.split(",") for line in csv.read_text().splitlines()]
        col, ep = rows[0].index("val/rankme"), rows[0].index("epoch")
        scores.update({int(r[ep]): float(r[col]) for r in rows[1:] if r[col]})
    assert sorted(scores) == [0, 1, 2, 3]
    top = max(scores, key=scores.get)
    assert best[0].name == f"best-rankme-epoch={top}.ckpt"
    assert f"best RankMe ckpt: {best[0]}" in out


def test_extending_a_finished_run_trains_exactly_the_missing_steps(tmp_path: Path, capsys) -> None:
    # 64 images / 16 = 4 steps per epoch; the first run stops at step 3, inside epoch 0.
    recipe = _write(tmp_path, steps=3, epochs=3)
    assert main(["fit", str(recipe)]) == 0
    assert main(["fit", str(recipe), "resume=auto"]) == 2
    line = _error(capsys)
    assert line.startswith("ssl-toolkit: error: trainer.max_steps: ") and "set trainer.max_steps above 3" in line
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=6"]) == 0
    extended = _load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    straight = _write(tmp_path / "s", steps=6, epochs=3)
    assert main(["fit", str(straight)]) == 0
    reference = _load(tmp_path / "s" / "run" / "checkpoints" / "last.ckpt")
    assert extended["global_step"] == reference["global_step"] == 6
    _assert_same_tensors(extended["state_dict"], reference["state_dict"], "state_dict")  # bit for bit

    # By epochs: the run at step 6 (epoch 1, batch 2) with max_epochs 2 trains the 2 batches left.
    capsys.readouterr()
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=-1", "trainer.max_epochs=2"]) == 0
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=-1", "trainer.max_epochs=2"]) == 2
    assert "trainer.max_epochs: " in _error(capsys)


def _epochs(checkpoint: Path) -> dict:
    return _load(checkpoint)["loops"]["fit_loop"]["epoch_progress"]["total"]


def test_a_checkpoint_written_by_a_resumed_run_resumes_each_epoch_once(tmp_path: Path, monkeypatch) -> None:
    # 4 steps per epoch, a checkpoint at every epoch's end. Run 1 trains epoch 0; run 2 resumes it
    # for epoch 1; run 3 resumes from run 2's end-of-epoch-1 checkpoint for epoch 2 and must equal
    # 3 uninterrupted epochs. Before the fix run 2's checkpoints lagged one epoch (ready/started
    # not counted) and run 3 trained epoch 1 again (16 steps); the folder "old" replays that run 2
    # (the fix switched off) and must resume exactly as well.
    from ssl_toolkit.run.last_checkpoint import LastCheckpoint

    every_epoch = {"every_n_epochs": 1, "save_top_k": -1}
    recipe = _write(tmp_path, steps=-1, epochs=1, checkpoint=every_epoch)
    assert main(["fit", str(recipe)]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "old")
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_epochs=2"]) == 0
    with monkeypatch.context() as m:
        m.setattr(LastCheckpoint, "on_train_start", lambda *args: None)
        assert main(["fit", str(recipe), f"out_dir={tmp_path / 'old'}", "resume=auto", "trainer.max_epochs=2"]) == 0
    epoch_1 = "checkpoints/epoch=1-step=8.ckpt"
    assert _epochs(tmp_path / "run" / epoch_1) == {"ready": 2, "started": 2, "processed": 2, "completed": 1}
    assert _epochs(tmp_path / "old" / epoch_1)["ready"] == 1  # the lagging checkpoint of the old code

    straight = _write(tmp_path / "s", steps=-1, epochs=3, checkpoint=every_epoch)
    assert main(["fit", str(straight)]) == 0
    reference = _load(tmp_path / "s" / "run" / "checkpoints" / "last.ckpt")
    for run in ("run", "old"):
        folder = tmp_path / run
        (folder / "checkpoints" / "last.ckpt").unlink()
        args = [f"out_dir={folder}", f"resume={folder / epoch_1}", "trainer.max_epochs=3"]
        assert main(["fit", str(recipe), *args]) == 0
        assert sorted(p.name for p in (folder / "checkpoints").glob("epoch=2-*")) == ["epoch=2-step=12.ckpt"], run
        extended = _load(folder / "checkpoints" / "last.ckpt")
        assert extended["global_step"] == reference["global_step"] == 12, run
        _assert_same_tensors(extended["state_dict"], reference["state_dict"], run)  # bit for bit


SLOW = """
import sys, time
from pathlib import Path
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

def on_train_batch_end(self, outputs, batch, batch_idx):
    Path(sys.argv[1]).touch()
    time.sleep(0.5)

SSLModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[2:]))
"""


def test_second_process_on_a_training_run_folder_is_refused_and_a_dead_lock_is_taken_over(tmp_path, capsys) -> None:
    recipe = _write(tmp_path, steps=2)
    assert main(["fit", str(recipe)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    marker = tmp_path / "training"
    first = subprocess.Popen([sys.executable, "-c", SLOW, str(marker), "fit", str(recipe), "resume=auto",
                              "trainer.max_steps=8"], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    capsys.readouterr()
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=8"]) == 2
    line = _error(capsys)
    assert line.startswith(f"ssl-toolkit: error: out_dir: {tmp_path / 'run'} is in use by process {first.pid} on ")
    assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released at the end
    assert not (tmp_path / "run" / "resume-2.json").exists()  # the refused one wrote nothing

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=10"]) == 0  # stale lock taken over
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 10


def test_a_resumed_run_reads_its_checkpoint_once_before_lightning(tmp_path: Path, monkeypatch) -> None:
    # resume=auto over a folder with two checkpoints: each file is read once to pick the newest, and
    # the checks before training (weights fit, same kinds, trains more) reuse that read.
    recipe = _write(tmp_path, steps=4, epochs=1)
    assert main(["fit", str(recipe)]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt")) == [
        "epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"
    ]  # fmt: skip
    reads: list[str] = []
    real_load = torch.load

    def counting_load(f: object, *args: object, **kwargs: object) -> object:
        caller = sys._getframe(1).f_globals["__name__"]
        reads.append(f"{caller}:{Path(str(getattr(f, 'path', f))).name}")
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=6", "trainer.max_epochs=2"]) == 0
    ours = [r for r in reads if r.startswith("ssl_toolkit.")]
    lightning = [r for r in reads if r.startswith("lightning.")]
    # One read per checkpoint file to find the newest (step 4: last.ckpt wins the tie), none after.
    assert sorted(ours) == [f"ssl_toolkit.recipe.checkpoint:{n}" for n in
                            ("epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt")], reads  # fmt: skip
    assert len(lightning) == 1 and reads.index(lightning[0]) == len(reads) - 1, reads  # Lightning's restore, last


@pytest.mark.parametrize(
    ("override", "says"),
    [
        # each differing entry says which side holds what: checkpoint 128 wide, the recipe's model 8
        (
            "head.out_dim=8",
            "recipe's model (8,); head.projector.4.running_var: checkpoint (128,), recipe's model (8,); and 1 more)",
        ),
        ("scheduler.name=warmup_cosine", "was trained with"),
        ("data.num_samples=32", "data.num_samples: "),  # the loader position and stored subsets: other data
        ("callbacks.checkpoint.save_top_k=1", "callbacks.checkpoint.save_top_k: "),  # would delete checkpoints
    ],
    ids=["weights-do-not-fit", "another-kind-of-scheduler", "other-data", "fewer-checkpoints-kept"],
)
def test_resume_refuses_a_recipe_its_checkpoint_does_not_fit(tmp_path: Path, capsys, override: str, says: str) -> None:
    recipe = _write(tmp_path, steps=2, epochs=1)
    assert main(["fit", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["fit", str(recipe), "resume=auto", "trainer.max_steps=4", "trainer.max_epochs=2", override]) == 2
    assert says in _error(capsys)
    assert not (tmp_path / "run" / "resume-1.json").exists()  # refused before anything was written
