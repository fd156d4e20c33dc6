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


def test_readme_quick_try_command_on_fashion_mnist(tmp_path: Path) -> None:
    # README's quick-try command as a user types it (an evaluation after step 3 on 2 batches per
    # loader), with wandb back on (offline) to check its console block stays hidden, and a data slice.
    quick_try = ["backbone.name=resnet10t", "data.batch_size=32", "trainer.max_steps=3",
                 "trainer.val_check_interval=3", "trainer.limit_val_batches=2", "logger.wandb=false",
                 "out_dir=runs/try"]  # fmt: skip
    slice_ = ["logger.wandb=true", "data.num_workers=0", "data.train_samples=2048", "data.val_samples=512"]
    res = run_cli("fit", str(DEMO), *quick_try, *slice_, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "try"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "recipe.yaml").is_file()
    assert any((run / "wandb").glob("offline-run-*"))
    assert "final train/loss" in res.stdout
    # Quiet by default: none of the third-party noise (run/quiet.py lists what is filtered).
    # The last: our own last.ckpt save passes weights_only=False (Lightning logs it when left unset).
    noises = ("Tip:", "LeafSpec", "Total Flops", "Run history", "wandb:", "Loading `train_dataloader`",
              "`weights_only` was not set")  # fmt: skip
    for noise in noises:
        assert noise not in res.stdout + res.stderr, noise
    assert "| backbone" in res.stdout + res.stderr  # the model summary itself stays
    assert "evaluation 1 at step 3 (epoch 0)" in res.stdout and "val/knn_top1:" in res.stdout


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
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(
    args: list[str], message: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    # The first case through the console script (a new process: nothing but that line on stderr),
    # the others through the same `main` in this process (the subprocess start costs ~6 s each).
    if args[1] == "missing.yaml":
        res = run_cli(*args, f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
        code, stderr = res.returncode, res.stderr
    else:
        monkeypatch.chdir(tmp_path)
        code, stderr = main([*args, f"out_dir={tmp_path / 'out'}"]), capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and message in lines[0] and lines[0].startswith("ssl-toolkit: error:")
    assert not (tmp_path / "out").exists()  # nothing started


def test_help_and_recipes_list() -> None:
    res = subprocess.run([str(CLI), "fit", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "key=value" in res.stdout and "--verbose" in res.stdout
    res = subprocess.run([str(CLI), "recipes"], capture_output=True, text=True, cwd=REPO)
    assert "recipes/fashion_mnist/simclr.yaml" in res.stdout.split()  # a path `fit` accepts from here


def eval_recipe(tmp_path: Path, *overrides: str) -> Path:
    """The demo recipe's callbacks (k-NN, linear probe, RankMe, best-RankMe checkpoint) on one
    synthetic epoch of 4 steps, no sanity check (as in the recipe), plus ``key=value`` overrides."""
    recipe = tiny_recipe(DEMO, tmp_path, steps=-1)
    recipe["trainer"]["num_sanity_val_steps"] = 0
    merged = OmegaConf.merge(OmegaConf.create(recipe), OmegaConf.from_dotlist(list(overrides)))
    path = tmp_path / "eval.yaml"
    path.write_text(OmegaConf.to_yaml(merged))
    return path


def val_rows(run: Path) -> list[dict[str, str]]:
    rows = csv.DictReader((run / "csv" / "metrics.csv").open())
    return [{k: v for k, v in r.items() if v and k.startswith("val/") or k == "step"} for r in rows if any(
        v and k.startswith("val/") for k, v in r.items())]  # fmt: skip


@pytest.fixture
def validation_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Global steps at which SSLModule.validation_step ran (one entry per embedded batch)."""
    from ssl_toolkit.module import SSLModule

    calls: list[int] = []
    inner = SSLModule.validation_step

    def spy(self, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
        calls.append(self.global_step)
        return inner(self, batch, batch_idx, dataloader_idx)

    monkeypatch.setattr(SSLModule, "validation_step", spy)
    return calls


def test_limit_val_batches_0_runs_no_evaluation(tmp_path: Path, capsys, validation_calls: list[int]) -> None:
    assert main(["fit", str(eval_recipe(tmp_path)), "trainer.limit_val_batches=0"]) == 0
    out = capsys.readouterr().out
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert validation_calls == [] and "val/" not in header and "val/" not in out  # nothing embedded
    assert "evaluation:       none ran" in out and "train/linear_loss" in header  # the probe still trained


def test_monitored_checkpoint_before_any_evaluation_is_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    # best-rankme-* is due at the epoch end, but evaluation never ran: no file, our line instead of
    # Lightning's "could not find the monitored key ... HINT: Did you call `log(...)`" warning.
    with caplog.at_level("WARNING"):
        assert main(["fit", str(eval_recipe(tmp_path)), "trainer.limit_val_batches=0"]) == 0
    said = [r.getMessage() for r in caplog.records if "not written at step" in r.getMessage()]
    assert len(said) == 1 and "val/rankme" in said[0] and "limit_val_batches" in said[0]
    assert not any("could not find the monitored key" in str(w.message) for w in recwarn.list)
    assert not list((tmp_path / "run" / "checkpoints").glob("best-rankme*"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_an_evaluation_that_embeds_none_of_rankmes_rows_is_said_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # limit_val_batches=1 embeds only the k-NN bank's first batch (train rows 0-15); a RankMe subset
    # of rows >= 16 is then absent. RankMe says so and logs nothing; the best-RankMe checkpoint is
    # said not written (Lightning would raise "could not find the monitored key"), and the run ends.
    from ssl_toolkit.data.subset import fixed_subset

    seed = next(s for s in range(1000) if int(fixed_subset(64, 3, s).min()) >= 16)
    with caplog.at_level("WARNING"):
        assert main(["fit", str(eval_recipe(tmp_path)), "trainer.limit_val_batches=1", "callbacks.rankme.num_samples=3",
                     f"callbacks.rankme.seed={seed}"]) == 0  # fmt: skip
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("RankMe: the evaluation embedded none of its 3 samples") for m in said)
    assert [m for m in said if "not written" in m] == [
        "checkpoint 'best-rankme-{epoch}' not written at step 4: val/rankme was not computed by the evaluation "
        "(see the lines above)"]  # fmt: skip
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob("best-rankme*"))


def test_val_check_interval_evaluates_every_n_steps(tmp_path: Path, capsys, validation_calls: list[int]) -> None:
    assert main(["fit", str(eval_recipe(tmp_path)), "trainer.val_check_interval=2"]) == 0
    out = capsys.readouterr().out
    # 4 steps: evaluations after steps 2 and 4; each embeds 1 val + 4 bank batches of 16 (RankMe
    # reads the bank: the whole train split) + 1 chunk of the diagnostics' 16 image pairs.
    assert sorted(set(validation_calls)) == [2, 4] and len(validation_calls) == 2 * 6
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("evaluation ")] == [
        "evaluation 1 at step 2 (epoch 0)", "evaluation 2 at step 4 (epoch 0)"]  # fmt: skip
    rows = val_rows(tmp_path / "run")
    assert len(rows) == 2 and all({"val/knn_top1", "val/linear_top1", "val/rankme"} <= r.keys() for r in rows)
    assert "evaluation:       " in out and "in 2 run(s)" in out
    assert next((tmp_path / "run" / "checkpoints").glob("best-rankme-*.ckpt")).is_file()


def test_no_evaluation_hint_names_every_knob(tmp_path: Path, capsys, validation_calls: list[int]) -> None:
    # max_steps=2 stops the run inside its 4-step epoch: the epoch-end evaluation never comes.
    assert main(["fit", str(eval_recipe(tmp_path)), "trainer.max_steps=2"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluation:")]
    assert validation_calls == [] and "none ran" in line
    for knob in ("trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.limit_val_batches",
                 "trainer.max_steps stops inside an epoch"):  # fmt: skip
        assert knob in line, knob


def test_epoch_shorter_than_log_every_n_steps_is_quiet_and_still_logs_the_loss(tmp_path: Path) -> None:
    # 2 epochs of 4 steps, log_every_n_steps=5: Lightning warns that an epoch has fewer batches than
    # the interval; the warning is filtered (run/quiet.py) because the loss is logged anyway, every 5
    # steps counted across epochs: at step 5, in the second epoch.
    import warnings

    recipe = eval_recipe(tmp_path, "trainer.max_epochs=2", "trainer.log_every_n_steps=5", "trainer.limit_val_batches=0")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["fit", str(recipe)]) == 0
    assert not [w for w in seen if "logging interval" in str(w.message)]
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), int(r["epoch"])) for r in rows if r.get("train/loss")] == [(4, 1)]  # step 5, 0-based


@pytest.mark.parametrize("off", ["null", "false"])
def test_callbacks_knn_off_runs_without_knn(off: str, tmp_path: Path, capsys, validation_calls: list[int]) -> None:
    assert main(["fit", str(eval_recipe(tmp_path)), f"callbacks.knn={off}"]) == 0
    out = capsys.readouterr().out
    (row,) = val_rows(tmp_path / "run")
    assert not any(k.startswith("val/knn") for k in row) and "val/knn" not in out
    assert {"val/linear_top1", "val/rankme"} <= row.keys()
    # No k-NN bank: RankMe embeds only its own rows (all 64 here), the probe the 16 val images,
    # the diagnostics their one chunk of 16 image pairs.
    assert len(validation_calls) == 1 + 4 + 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("callbacks.rankme=null", "callbacks.rankme_checkpoint: monitors val/rankme but callbacks.rankme is off"),
        ("callbacks.checkpoint=false", "callbacks.checkpoint: cannot be turned off"),
        ("callbacks.knn=3", "callbacks.knn: expected a mapping of keywords, or null/false to turn it off"),
        ("callbacks.knn.every_n_epochs=2", "callbacks.knn.every_n_epochs: unknown key"),
    ],
)
def test_callback_switches_refuse_what_cannot_work(override: str, message: str, tmp_path: Path, capsys) -> None:
    assert main(["fit", str(DEMO), override, f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssl-toolkit: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_summary_times_training_and_evaluation_apart_and_says_when_too_few_steps(tmp_path: Path) -> None:
    from ssl_toolkit.run.cli import timing_lines
    from ssl_toolkit.run.fit import FitResult

    short = FitResult(tmp_path, None, 1.0, 9.0, None, 1, {}, train_seconds=2.0, measured_steps=0)
    assert timing_lines(short)[1:] == [
        "training:         2.0 s, throughput not measured: too few steps (1; the first 2 are warm-up)",
        "evaluation:       none ran (it runs every trainer.val_check_interval training steps or else at the end of "
        "an epoch, in every trainer.check_val_every_n_epoch-th epoch, over trainer.limit_val_batches batches per "
        "loader (0 skips it); a run that trainer.max_steps stops inside an epoch never reaches that epoch's end)",
    ]
    done = FitResult(tmp_path, None, 1.0, 9.0, 250.0, 12, {}, 6.0, 2.5, 2, 0.4, 10)
    assert timing_lines(done)[1:] == [
        "training:         6.0 s, 250.0 images/s over 10 step(s) (evaluation excluded)",
        "evaluation:       2.5 s in 2 run(s) + sanity check 0.4 s",
    ]
