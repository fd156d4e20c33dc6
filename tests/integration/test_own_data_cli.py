"""`ssl-toolkit` on the user's own images: a flat unlabelled folder without a val split trains,
logs RankMe, keeps a best-RankMe checkpoint that `select` ranks; label-needing evaluations are
skipped with one line, or run on a separate labelled `eval_root`; Hydra refuses unlabelled data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, tiny_recipe
from ssl_toolkit.run.cli import main

DEMO = REPO / "recipes" / "fashion_mnist" / "simclr.yaml"
CLI = Path(sys.executable).with_name("ssl-toolkit")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    return subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def _photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (40, 30)) -> None:
    """``count`` JPEGs of random blocks (distinct images, so RankMe has something to measure)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        blocks = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)
        image.save(folder / f"IMG_{i:04d}.jpg", quality=90)


def _recipe(tmp_path: Path, data: dict, recipe: Path = DEMO) -> Path:
    r = tiny_recipe(recipe, tmp_path, steps=6)
    r["data"] = {"name": "image_folder", "image_size": 32, "batch_size": 8, "num_workers": 0, **data}
    r["trainer"]["max_epochs"] = 2  # 24 images / 8 = 3 steps per epoch: two evaluations
    r["callbacks"]["rankme"]["num_samples"] = 16
    r["callbacks"]["checkpoint"] = {"save_top_k": -1, "every_n_epochs": 1}
    path = tmp_path / "recipe.yaml"
    path.write_text(OmegaConf.to_yaml(r))
    return path


@pytest.mark.slow
def test_flat_unlabelled_folder_trains_logs_rankme_and_select_ranks(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "photos", 24)
    recipe = _recipe(tmp_path, {"root": str(tmp_path / "photos")})
    res = run_cli("fit", str(recipe), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert f"image_folder: labels=none: every image under {tmp_path / 'photos'}, label -1; no held-out split" in err
    skipped = [line for line in err.splitlines() if "skipped: the training data has no labels" in line]
    assert len(skipped) == 1 and "KNNProbe and LinearProbe skipped" in skipped[0]
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    rankme = [float(r["val/rankme"]) for r in rows if r.get("val/rankme")]
    assert len(rankme) == 2 and all(1 <= v <= 16 for v in rankme)
    assert not any(r.get("val/knn_top1") or r.get("val/linear_top1") or r.get("train/linear_loss") for r in rows)
    assert len(list((run / "checkpoints").glob("best-rankme-*.ckpt"))) == 1
    assert "val/rankme:" in res.stdout and "knn" not in res.stdout

    out = tmp_path / "selection.json"
    assert main(["select", str(run), "--num-samples", "16", "--out", str(out), "data.num_workers=0"]) == 0
    table = json.loads(out.read_text())["table"]
    assert sorted(r["step"] for r in table) == [3, 6]
    assert table[0]["rankme"] >= table[1]["rankme"] and "selected:" in capsys.readouterr().out
    assert main(["knn", str(run / "checkpoints" / "last.ckpt"), "data.num_workers=0"]) == 2  # nothing to score on
    assert capsys.readouterr().err.startswith("ssl-toolkit: error: data: the run's data has no labels")


def test_eval_root_runs_knn_and_probe_while_pretraining_on_unlabelled_images(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "photos" / "a" / "b", 24)  # nested, no classes (labels=none)
    for split, count in (("train", 8), ("val", 4)):
        for c in range(2):
            _photos(tmp_path / "labelled" / split / f"class{c}", count, seed=10 * c + len(split))
    recipe = _recipe(tmp_path, {"root": str(tmp_path / "photos"), "labels": "none",
                                "eval_root": str(tmp_path / "labelled")})  # fmt: skip
    assert main(["fit", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert "skipped" not in captured.err
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    for key in ("val/knn_top1", "val/linear_top1", "val/rankme"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert len(values) == 2 and all(v >= 0 for v in values), key
    assert not any(r.get("train/linear_loss") for r in rows)  # the training batches have no labels
    assert main(["knn", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--k", "5"]) == 0  # offline: eval_root too
    assert "val top-1" in capsys.readouterr().out


@pytest.mark.parametrize("data", [{"root": "missing_eval"}, {"root": "photos"}])
def test_bad_eval_root_is_one_line_before_training(tmp_path: Path, capsys, data: dict) -> None:
    _photos(tmp_path / "photos", 24)
    recipe = _recipe(tmp_path, {"root": str(tmp_path / "photos"), "eval_root": str(tmp_path / data["root"])})
    assert main(["fit", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: data.eval_root: "), err
    assert not (tmp_path / "run").exists()


def test_hydra_refuses_an_unlabelled_folder_before_training(tmp_path: Path, capsys) -> None:
    _photos(tmp_path / "photos", 24)
    recipe = _recipe(tmp_path, {"root": str(tmp_path / "photos")}, REPO / "recipes" / "fashion_mnist" / "hydra.yaml")
    assert main(["fit", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssl-toolkit: error: head.name: 'hydra' needs class labels") and len(err) == 1
    assert not (tmp_path / "run").exists()


def test_any_file_name_trains_and_bad_names_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "données ünï"
    _photos(root / "train" / "café", 8)  # class folder with a non-ASCII name
    (root / "train" / "café" / "IMG_0000.jpg").rename(root / "train" / "café" / "café au lait.jpg")
    _photos(root / "train" / "thé", 8, seed=1)
    latin1 = os.fsencode(root / "train" / "thé") + b"/ol\xe9.jpg"  # a name that is not valid UTF-8
    os.rename(os.fsencode(root / "train" / "thé" / "IMG_0001.jpg"), latin1)
    with open(os.fsencode(root / "train" / "thé") + b"/bad\xff.jpg", "wb") as f:
        f.write(b"\xff\xd8 truncated")
    recipe = _recipe(tmp_path, {"root": str(root), "max_bad_fraction": 0.1})
    assert main(["fit", str(recipe)]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "bad_files.txt").read_bytes().startswith(os.fsencode(root / "train" / "thé") + b"/bad\xff.jpg\t")
