"""Offline tools on a real (tiny) run folder: load_checkpoint, probe, knn, select."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import ssl_toolkit.eval.selection as select_module
import ssl_toolkit.run.fit as run_module
from conftest import REPO, tiny_recipe
from ssl_toolkit.data.base import TensorImageDataset
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.errors import CheckpointError, DataError, RecipeError
from ssl_toolkit.eval.probe import linear_probe
from ssl_toolkit.eval.selection import find_checkpoints, format_table, rank_checkpoints
from ssl_toolkit.metrics import rankme
from ssl_toolkit.module import SSLModule
from ssl_toolkit.recipe.checkpoint import load_checkpoint
from ssl_toolkit.run.cli import main

N_TRAIN = 40


@dataclass
class TinyRun:
    path: Path
    trained: SSLModule  # the module object that `fit` trained, as it was at the end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A 2-epoch run (1 step each) with a checkpoint per epoch plus last.ckpt."""
    tmp = tmp_path_factory.mktemp("offline")
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp)
    # 16 px images keep every embedding pass cheap on a shared 2-core CPU.
    recipe["data"].update(num_samples=N_TRAIN, num_val_samples=16, batch_size=16, image_size=16)
    recipe["augment"]["size"] = 16
    recipe["head"].update(hidden_dim=64, out_dim=32)
    recipe["trainer"].update(max_epochs=2, max_steps=-1, limit_train_batches=1)
    recipe["callbacks"] = {"checkpoint": {"every_n_epochs": 1, "save_top_k": -1}}
    path = tmp / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    built = []
    with pytest.MonkeyPatch.context() as mp:  # keep hold of the module that fit trains
        original = run_module.build_parts
        mp.setattr(run_module, "build_parts", lambda r: built.append(original(r)) or built[-1])
        assert main(["fit", str(path)]) == 0
    return TinyRun(tmp / "run", built[0].module)


def ckpts(run: Path) -> list[str]:
    """Names of the checkpoint files of a run."""
    return sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))


def rewrite(run: Path, dest: Path, edit: Callable[[dict], object]) -> Path:
    """Copy a run folder and apply ``edit(checkpoint_dict)`` to each of its checkpoints."""
    shutil.copytree(run, dest)
    for p in (dest / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        edit(ckpt)
        torch.save(ckpt, p)
    return dest


def test_load_checkpoint_round_trips_the_trained_weights(tiny_run: TinyRun, images: torch.Tensor) -> None:
    assert ckpts(tiny_run.path) == ["epoch=0-step=1.ckpt", "epoch=1-step=2.ckpt", "last.ckpt"]
    loaded = load_checkpoint(tiny_run.path / "checkpoints" / "last.ckpt")
    assert (loaded.epoch, loaded.step) == (1, 2) and not loaded.module.training
    assert loaded.module.device.type == "cpu" and loaded.recipe["head"]["name"] == "simclr"
    trained = tiny_run.trained.cpu().eval()
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    assert torch.equal(loaded.module.embed(images), trained.embed(images))
    earlier = load_checkpoint(tiny_run.path / "checkpoints" / "epoch=0-step=1.ckpt")
    assert earlier.step == 1 and not torch.equal(earlier.module.embed(images), trained.embed(images))


def test_data_overrides_and_recipe_yaml_fallback(tiny_run: TinyRun, tmp_path: Path) -> None:
    last = tiny_run.path / "checkpoints" / "last.ckpt"
    loaded = load_checkpoint(last, data_overrides={"num_val_samples": 8, "num_workers": 0})
    assert len(loaded.datamodule.val_set) == 8 and loaded.recipe["data"]["num_val_samples"] == 8
    with pytest.raises(RecipeError, match="data.num_val_sample: unknown key"):
        load_checkpoint(last, data_overrides={"num_val_sample": 8})
    with pytest.raises(RecipeError, match="data.num_val_samples: expected"):
        load_checkpoint(last, data_overrides={"num_val_samples": "many"})
    # A checkpoint without its recipe falls back to the run folder's recipe.yaml.
    old = rewrite(tiny_run.path, tmp_path / "old", lambda c: c.pop("recipe"))
    assert load_checkpoint(old / "checkpoints" / "last.ckpt").step == 2
    # Weights that do not fit the recipe are refused (strict loading), naming the file.
    extra = rewrite(tiny_run.path, tmp_path / "extra", lambda c: c["state_dict"].update(stray=torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"last.ckpt does not match its recipe .*stray"):
        load_checkpoint(extra / "checkpoints" / "last.ckpt")
    # Without either, a one-line error naming the file.
    (old / "recipe.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"carries no recipe") as err:
        load_checkpoint(old / "checkpoints" / "last.ckpt")
    assert str(old / "checkpoints" / "last.ckpt") in str(err.value) and "\n" not in str(err.value)


def test_torch_load_is_always_weights_only(tiny_run: TinyRun, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = torch.load

    def strict_load(f: Path, map_location: str, weights_only: bool | None = None, mmap: bool | None = None) -> dict:
        assert weights_only is True
        calls.append(mmap)
        return original(f, map_location=map_location, weights_only=weights_only, mmap=mmap)

    monkeypatch.setattr(torch, "load", strict_load)
    load_checkpoint(tiny_run.path / "checkpoints" / "last.ckpt")
    find_checkpoints([tiny_run.path])
    assert len(calls) == 4 and True in calls  # 1 load + 3 memory-mapped peeks


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_non_checkpoint_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    bad = tmp_path / "notes.ckpt"
    bad.write_bytes(content)
    for command in (["probe", str(bad)], ["knn", str(bad)], ["knn", str(tmp_path / "missing.ckpt")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ssl-toolkit: error: checkpoint:") and "\n" not in err and command[1] in err
    torch.save(torch.zeros(3), bad)
    with pytest.raises(CheckpointError, match="has no state_dict"):
        load_checkpoint(bad)


def test_probe_and_knn_cli_print_accuracies_and_never_overwrite(
    tiny_run: TinyRun, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tiny_run.path / "checkpoints" / "epoch=1-step=2.ckpt"
    eval_dir = tiny_run.path / "eval"
    for kind, extra in (("probe", ["--epochs", "30"]), ("knn", ["--k", "20"])):
        assert main([kind, str(ckpt), *extra, "data.num_val_samples=12"]) == 0
        first = json.loads((eval_dir / f"{kind}-epoch=1-step=2.json").read_text())
        assert main([kind, str(ckpt), *extra, "data.num_val_samples=12"]) == 0
        second = json.loads((eval_dir / f"{kind}-epoch=1-step=2_1.json").read_text())
        out = capsys.readouterr().out
        assert out.count("val top-1") == 2 and f"{kind}-epoch=1-step=2_1.json" in out
        for record in (first, second):
            assert 0.0 <= record["top1"] <= record["top5"] <= 1.0 and record["num_val"] == 12
            assert record["step"] == 2 and record["data_overrides"] == {"num_val_samples": 12}
        assert first["top1"] == second["top1"]  # deterministic on the CPU
    assert first["knn"] == {"k": 20, "temperature": 0.07}
    probe = json.loads((eval_dir / "probe-epoch=1-step=2.json").read_text())
    assert probe["probe"]["method"] == "lbfgs" and 0.0 <= probe["train_top1"] <= 1.0
    assert main(["knn", str(ckpt), "num_val_samples=12"]) == 2
    assert "expected data.KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lbfgs", "sgd"])
def test_linear_probe_separates_blobs_deterministically(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 4 + 10  # far from the origin: standardization matters

    def split(n: int) -> EmbeddedSplit:
        labels = torch.arange(n) % 3
        return EmbeddedSplit(centers[labels] + torch.randn(n, 16, generator=g), None, labels, torch.arange(n))

    train, val = split(120), split(60)
    a = linear_probe(train, val, 3, method=method, epochs=20)
    b = linear_probe(train, val, 3, method=method, epochs=20)
    assert a == b and a.top1 >= 0.95 and a.train_top1 >= 0.95 and a.top5 == 1.0
    unlabelled = EmbeddedSplit(train.feats, None, torch.full((120,), -1), train.index)
    with pytest.raises(DataError, match="train: labels"):
        linear_probe(unlabelled, val, 3, method=method)


def test_select_ranks_by_rankme_on_one_random_subset(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []
    original = select_module.embed_split
    monkeypatch.setattr(
        select_module, "embed_split", lambda m, loader, with_proj: seen.append(loader) or original(m, loader, with_proj)
    )
    out = tmp_path / "choice.json"
    assert main(["select", str(tiny_run.path), "--num-samples", "20", "--out", str(out), "data.num_workers=0"]) == 0
    record = json.loads(out.read_text())
    table = record["table"]
    # last.ckpt (step 2) duplicates epoch=1-step=2.ckpt and is left out.
    assert {Path(r["checkpoint"]).name for r in table} == {"epoch=0-step=1.ckpt", "epoch=1-step=2.ckpt"}
    assert [r["rankme"] for r in table] == sorted((r["rankme"] for r in table), reverse=True)
    assert record["selected"] == table[0] and all(r["knn_top1"] is None is r["linear_top1"] for r in table)
    assert not list(tmp_path.glob("*.png"))  # the plot needs accuracies: only with --with-labels
    printed = capsys.readouterr().out
    assert "RankMe" in printed and "k-NN" not in printed
    selected = [line for line in printed.splitlines() if line.startswith("*")]
    assert len(selected) == 1 and Path(table[0]["checkpoint"]).name in selected[0]

    # Recompute: the same 20 random (not first) train images, embedded by each checkpoint.
    subset = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(0))[:20]
    assert len(seen) == 2 and all(sorted(loader.dataset.indices.tolist()) == sorted(subset.tolist()) for loader in seen)
    for row in table:
        loaded = load_checkpoint(row["checkpoint"])
        feats = loaded.module.embed(loaded.datamodule.train_set.images[subset])
        assert row["rankme"] == pytest.approx(rankme(feats), rel=1e-5)
        assert row["rankme_proj"] == pytest.approx(rankme(loaded.module.head.embed(feats)), rel=1e-5)
        first_rows = loaded.module.embed(loaded.datamodule.train_set.images[:20])
        assert row["rankme"] != pytest.approx(rankme(first_rows), rel=1e-5)


def test_select_reads_labels_only_with_labels(tiny_run: TinyRun, monkeypatch: pytest.MonkeyPatch) -> None:
    class Poison:
        """A label that fails on any use (collation, conversion, comparison)."""

        def __getattr__(self, name: str) -> object:
            raise AssertionError("a label was read")

    get = TensorImageDataset.__getitem__
    monkeypatch.setattr(TensorImageDataset, "__getitem__", lambda self, i: (get(self, i)[0], Poison(), i))
    rows = rank_checkpoints([tiny_run.path], num_samples=16, data_overrides={"num_workers": 0})
    assert len(rows) == 2 and all(r.knn_top1 is None and r.rankme >= 1 for r in rows)
    with pytest.raises((TypeError, AssertionError)):  # the trap does fire when labels are used
        rank_checkpoints([tiny_run.path], num_samples=16, with_labels=True)
    monkeypatch.undo()
    labelled = rank_checkpoints([tiny_run.path], num_samples=16, with_labels=True)
    assert all(0.0 <= r.knn_top1 <= 1.0 and 0.0 <= r.linear_top1 <= 1.0 for r in labelled)
    from ssl_toolkit.eval.probe import embed_labelled, knn_probe
    from ssl_toolkit.eval.probe import labelled as labelled_data

    for r in labelled:  # the same numbers as `ssl-toolkit knn` / `probe` (defaults) on that checkpoint
        loaded = load_checkpoint(r.checkpoint)
        train, val = embed_labelled(loaded.module, loaded.datamodule)
        classes = labelled_data(loaded.datamodule).num_classes
        assert r.knn_top1 == knn_probe(train, val, classes).top1
        assert r.linear_top1 == linear_probe(train, val, classes).top1
    assert "k-NN top-1" in format_table(labelled, with_labels=True) and "k-NN" not in format_table(rows)
    assert [(r.checkpoint, r.rankme, r.rankme_proj) for r in labelled] == [
        (r.checkpoint, r.rankme, r.rankme_proj) for r in rows
    ]


def test_select_with_several_metrics_ranks_by_the_first_and_reports_each(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from torch.utils.data import DataLoader

    from ssl_toolkit.eval.label_free import embed_views, selection_key
    from ssl_toolkit.eval.selection import ImagesOnly
    from ssl_toolkit.metrics_spectral import lidar

    out = tmp_path / "metrics.json"
    metrics = ["lidar", "rankme", "alpha_req", "auc", "alignment", "uniformity"]
    argv = ["select", str(tiny_run.path), "--num-samples", "16", "--metric", *metrics, "--view-images", "8",
            "--views", "3", "--with-labels", "--out", str(out), "data.num_workers=0"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.read_text())
    table = record["table"]
    keys = [selection_key("lidar", r["scores"]["lidar"]) for r in table]
    assert keys == sorted(keys) and record["criterion"].startswith("lidar") and record["selected"] == table[0]
    assert all(set(r["scores"]) == set(metrics) and r["scores"]["rankme"] == r["rankme"] for r in table)
    for entry in record["metrics"]:  # regret = best accuracy - accuracy of the metric's choice
        chosen = next(r for r in table if r["checkpoint"] == entry["selected"])
        for kind in ("knn", "linear"):
            best = max(r[f"{kind}_top1"] for r in table)
            assert entry[f"regret_{kind}"] == pytest.approx(best - chosen[f"{kind}_top1"])
            assert math.isnan(entry[f"spearman_{kind}"]) or -1.0 <= entry[f"spearman_{kind}"] <= 1.0
    printed = capsys.readouterr().out
    assert "k-NN: Spearman" in printed and "linear: Spearman" in printed and "alpha_req" in printed
    # The plot: a PNG next to the JSON; a second run writes metrics_1.png and leaves the first alone.
    png = tmp_path / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot:     {png}" in printed
    first = png.read_bytes()
    assert main([*argv, "--force"]) == 0
    assert png.read_bytes() == first and (tmp_path / "metrics_1.png").is_file()
    assert "plot:" in capsys.readouterr().out
    # LiDAR by hand: the first 8 images of the sorted random subset, 3 views drawn with seed 0.
    loaded = load_checkpoint(table[0]["checkpoint"], {"num_workers": 0})
    subset = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(0))[:16].sort().values[:8]
    loader = DataLoader(ImagesOnly(loaded.datamodule.train_set, subset), batch_size=loaded.datamodule.batch_size)
    views = embed_views(loaded.module, loader, 3, seed=0)
    assert views.feats.shape[:2] == (8, 3)
    assert table[0]["scores"]["lidar"] == pytest.approx(lidar(views.feats), rel=1e-6)
    again = embed_views(loaded.module, loader, 3, seed=0)  # the same draw every time
    assert torch.equal(again.feats, views.feats) and not torch.equal(views.feats[:, 0], views.feats[:, 1])
    assert main(["select", str(tiny_run.path), "--metric", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "--metric: 'nope' is not one of" in capsys.readouterr().err


@pytest.mark.parametrize("values, best_step", [([1.0, 5.0], 2), ([5.0, 1.0], 1), ([float("nan"), 3.0], 2)])
def test_select_sorts_by_backbone_rankme_descending(
    tiny_run: TinyRun, monkeypatch: pytest.MonkeyPatch, values: list[float], best_step: int
) -> None:
    # Checkpoints are scored in step order; each gets (backbone, projector) values from the list.
    scores = iter(v for value in values for v in (value, -value))
    monkeypatch.setattr(select_module, "rankme", lambda z: next(scores))
    rows = rank_checkpoints([tiny_run.path], num_samples=8)
    assert [r.step for r in rows] == [best_step, 3 - best_step]
    assert rows[0].rankme == max(v for v in values if v == v) and rows[0].rankme_proj == -rows[0].rankme


def test_last_ckpt_is_kept_when_it_is_not_a_duplicate(tiny_run: TinyRun, tmp_path: Path) -> None:
    assert [p.name for _, p in find_checkpoints([tiny_run.path])] == ["epoch=0-step=1.ckpt", "epoch=1-step=2.ckpt"]
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run.path, copy)
    (copy / "checkpoints" / "epoch=1-step=2.ckpt").unlink()
    assert [p.name for _, p in find_checkpoints([copy])] == ["epoch=0-step=1.ckpt", "last.ckpt"]


def test_select_refuses_mixed_methods_other_data_and_overwriting(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = rewrite(tiny_run.path, tmp_path / "other", lambda c: c["recipe"]["head"].update(name="byol"))
    dcl = rewrite(tiny_run.path, tmp_path / "dcl", lambda c: c["recipe"]["head"].update(loss={"name": "dcl"}))
    moved = rewrite(tiny_run.path, tmp_path / "seed", lambda c: c["recipe"]["data"].update(seed=1))
    same = rewrite(tiny_run.path, tmp_path / "same", lambda c: c["recipe"]["data"].update(seed=0, num_workers=1))
    assert len(find_checkpoints([tiny_run.path, same])) == 4  # defaults spelled out and loader keys are no change
    out = tmp_path / "selection.json"
    for runs, message in (
        ([other], "RankMe only compares runs of the same method"),
        ([dcl], "is 'simclr+dcl'"),  # same head, another loss: another method
        ([moved], "data.seed is 0"),
    ):
        assert main(["select", str(tiny_run.path), *map(str, runs), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ssl-toolkit: error: select:") and message in err and "\n" not in err
    assert not out.exists()
    out.write_text("keep me")
    assert main(["select", str(tiny_run.path), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["select", str(tiny_run.path), "--out", str(out), "--force", "--num-samples", "8"]) == 2
    assert "not an earlier selection" in capsys.readouterr().err and out.read_text() == "keep me"
    out.write_text(json.dumps({"selected": {}}))  # an earlier selection: --force replaces it
    assert main(["select", str(tiny_run.path), "--out", str(out), "--force", "--num-samples", "8"]) == 0
    assert json.loads(out.read_text())["num_samples"] == 8
    assert main(["select", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")]) == 2
    assert "has no checkpoints" in capsys.readouterr().err


def test_tool_scripts() -> None:
    # Scripts run from tools/ have it first on sys.path: a tools/select.py would replace the
    # standard library's `select` (imported by subprocess) in every one of them.
    tools = REPO / "tools"
    assert not {p.stem for p in tools.glob("*.py")} & set(sys.stdlib_module_names)
    for script in ("linear_probe.py", "knn.py", "select_checkpoint.py"):
        res = subprocess.run([sys.executable, str(tools / script), "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "data.KEY=VALUE" in res.stdout


def test_online_knn_equals_offline_knn_on_the_same_checkpoint(tmp_path: Path) -> None:
    # One whole epoch (64 / 16 = 4 steps): the validation loop runs at its end, then last.ckpt is
    # written with the same weights; `ssl-toolkit knn` on it must give the logged value exactly.
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=-1)
    recipe["data"].update(num_classes=8, seed=4)  # images for which 4 steps score neither 0 nor 1
    recipe["callbacks"] = {"knn": {"k": 20, "temperature": 0.1}, "checkpoint": {}}
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    online = [(float(r["val/knn_top1"]), float(r["val/knn_top5"])) for r in rows if r.get("val/knn_top1")]
    assert len(online) == 1
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["knn", str(ckpt), "--k", "20", "--temperature", "0.1"]) == 0
    offline = json.loads((tmp_path / "run" / "eval" / "knn-last.json").read_text())
    assert offline["num_train"] == 64 and offline["num_val"] == 16
    assert online[0] == pytest.approx((offline["top1"], offline["top5"]), abs=1e-7)
    assert 0.0 < offline["top1"] < offline["top5"]  # not a trivial 0 or 1


def test_knn_k_larger_than_the_bank_says_so(tiny_run: TinyRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knn", str(tiny_run.path / "checkpoints" / "last.ckpt"), "--k", "100"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: --k 100 is larger than the bank ({N_TRAIN} labelled train images); all {N_TRAIN} vote"]


def test_select_writes_next_to_the_runs_it_ranked(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # never where the user stands
    runs = tmp_path / "runs"
    a, b = shutil.copytree(tiny_run.path, runs / "a"), shutil.copytree(tiny_run.path, runs / "b")
    assert main(["select", str(a), "--num-samples", "8"]) == 0
    assert (a / "selection.json").is_file()
    assert main(["select", str(a), str(b), "--num-samples", "8"]) == 0
    record = json.loads((runs / "selection.json").read_text())
    assert len(record["table"]) == 4 and not (tmp_path / "selection.json").exists()


def test_tools_never_download_for_a_pretrained_run(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run trained with backbone.pretrained=true: knn, probe, select and export work with no network."""

    def edit(ckpt: dict) -> None:
        ckpt["recipe"]["backbone"]["pretrained"] = True

    run = rewrite(tiny_run.path, tmp_path / "pretrained_run", edit)
    ckpt = run / "checkpoints" / "last.ckpt"

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    import socket

    import timm.models._builder

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)  # fails fast, no hub retries
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["knn", str(ckpt), "--k", "5"]) == 0
    assert main(["probe", str(ckpt), "--epochs", "5"]) == 0
    assert main(["select", str(run), "--num-samples", "16", "--out", str(tmp_path / "sel.json")]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "b.safetensors")]) == 0
    assert "error" not in capsys.readouterr().err
    # The same checkpoint built as the recipe says (pretrained=true) does try to download.
    with pytest.raises(RecipeError, match="backbone.pretrained: cannot load the pretrained weights"):
        run_module.build_parts(torch.load(ckpt, weights_only=True)["recipe"])


def test_select_report_names_the_run_of_each_choice() -> None:
    # Runs of a sweep share file names (epoch=1-step=16.ckpt): the line says which run it is.
    from ssl_toolkit.eval.selection import format_report

    report = [
        {"metric": "rankme", "better": "higher", "selected": "/sweep/t0.5/checkpoints/epoch=1-step=16.ckpt"},
        {"metric": "lidar", "better": "higher", "selected": "/sweep/t0.2/checkpoints/epoch=1-step=16.ckpt",
         "spearman_knn": 0.5, "regret_knn": 0.0039},
    ]  # fmt: skip
    assert format_report(report).splitlines() == [
        "rankme (higher is better): selects t0.5/epoch=1-step=16.ckpt",
        "lidar (higher is better): selects t0.2/epoch=1-step=16.ckpt; k-NN: Spearman +0.50, regret 0.39 points",
    ]
    # Every checkpoint with the same score: no ranking to correlate, said so (was "Spearman +nan").
    report[1]["spearman_knn"] = float("nan")
    assert format_report(report).splitlines()[1].endswith("k-NN: Spearman undefined (ties only), regret 0.39 points")
