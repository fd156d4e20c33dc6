"""tools/rehearse.py: shipped recipes run as shipped (own precision, strategy, SyncBN, callbacks).

The fast subset of the table in BENCHMARKS.md: the ImageNet-100 SwAV multi-crop recipe (bf16-mixed,
2 gloo processes started by Lightning, SyncBN, every evaluation callback, 2 x 224 + 6 x 96 px views)
trains 2 steps, evaluates, saves and resumes. The whole table is ``python tools/rehearse.py``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "rehearse.py"


def _tool():
    """tools/rehearse.py as a module (registered first: its dataclass looks itself up)."""
    if "rehearse" not in sys.modules:
        spec = importlib.util.spec_from_file_location("rehearse", TOOL)
        sys.modules["rehearse"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["rehearse"])
    return sys.modules["rehearse"]


# What a rehearsal may change: where it runs, the data it reads, how long it runs.
ALLOWED = {
    "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.max_epochs", "trainer.max_steps",
    "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.check_val_every_n_epoch",
    "trainer.val_check_interval", "logger.wandb", "logger.csv", "data.root", "data.num_workers", "data.batch_size",
    "callbacks.checkpoint.every_n_epochs", "callbacks.rankme_checkpoint.every_n_epochs",
    "callbacks.checkpoint.every_n_train_steps", "callbacks.rankme_checkpoint.every_n_train_steps",
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(REPO.glob("recipes/*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_overrides_keep_precision_strategy_syncbn_and_callbacks(path: Path) -> None:
    recipe = yaml.safe_load(path.read_text())
    keys = [o.split("=", 1)[0] for o in _tool().overrides(recipe, Path("/data"), full=False)]
    assert set(keys) <= ALLOWED, set(keys) - ALLOWED
    assert "trainer.devices" not in keys and "trainer.precision" not in keys and "trainer.sync_batchnorm" not in keys
    one_gpu = _tool().overrides(recipe, Path("/data"), full=True, accelerator="gpu", devices=1)
    assert "trainer.accelerator=gpu" in one_gpu and "trainer.devices=1" in one_gpu
    assert not any(o.startswith("data.batch_size") for o in one_gpu)  # --full: the recipe's batch


def test_processes_are_the_recipes_devices_capped_and_every_epoch_has_its_two_steps() -> None:
    tool = _tool()
    eight = {"trainer": {"devices": 8}, "data": {"batch_size": 128}}
    two = {"trainer": {"devices": 2}, "data": {"batch_size": 256, "classes_per_batch": 3}}
    assert tool.processes(eight, None, 2) == 2 and tool.processes(eight, None, 8) == 8
    assert tool.processes(two, None, 2) == 2 and tool.processes(two, 1, 2) == 1
    assert tool.processes({"data": {}}, None, 2) == 1
    for recipes, full in (([eight, two], False), ([eight, two], True)):
        procs = [tool.processes(r, None, 2) for r in recipes]
        per_class = tool.train_per_class(recipes, 16, full, procs)
        for r, n in zip(recipes, procs, strict=True):  # 3 global batches of every recipe fit in the folder
            assert 16 * per_class >= 3 * n * tool.batch_of(r, full, n)
    assert tool.batch_of(two, True) == 256 and tool.batch_of(two, False) == 9  # 8 rounded up to whole classes of 3


def test_small_batch_holds_more_images_than_the_losses_top_k() -> None:
    tool = _tool()
    groco = {"head": {"loss": {"top_k_negatives": 10}}, "data": {"batch_size": 256}}
    assert tool.small_batch(groco, 1) == 11 and tool.small_batch(groco, 2) == 8  # 2 x 8 = 16 > 10
    balanced = {"head": {"top_k": 20}, "data": {"classes_per_batch": 4}}
    assert tool.small_batch(balanced, 1) == 24  # 21 rounded up to whole classes of 4
    for path in sorted(REPO.glob("recipes/*/*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        procs = tool.processes(recipe, None, 2)
        batch = tool.small_batch(recipe, procs)
        assert all(batch * procs > k for k in tool._top_ks(recipe.get("head") or {})), path


@pytest.mark.slow
def test_swav_multicrop_recipe_as_shipped_trains_evaluates_saves_resumes(tmp_path: Path) -> None:
    recipe = REPO / "recipes" / "imagenet100" / "swav.yaml"
    shipped = yaml.safe_load(recipe.read_text())["trainer"]
    assert shipped["precision"] == "bf16-mixed" and shipped["devices"] == 2 and shipped["sync_batchnorm"]
    res = subprocess.run(
        [sys.executable, str(TOOL), str(recipe), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "rehearsal.jsonl").read_text().splitlines()]
    assert row["green"] and row["trained"] and row["evaluated"] and row["saved"] and row["resumed"], row
    assert {"val/knn_top1", "val/linear_top1", "val/rankme"} <= set(row["metrics"]), row["metrics"]
    assert "1 of 1 green" in res.stdout


def test_the_image_folder_only_ever_gains_files(tmp_path: Path) -> None:
    # A second rehearsal asking for another size must not rewrite a file a running one may read.
    tool = _tool()
    first = tool.make_folder(tmp_path / "data", 2, 1, 1) / "train" / "n00000000" / "img_0000.jpg"
    before = first.read_bytes()
    tool.make_folder(tmp_path / "data", 2, 2, 1)
    assert first.read_bytes() == before
    assert (tmp_path / "data" / "train" / "n00000001" / "img_0001.jpg").is_file()
    assert not list((tmp_path / "data").rglob("*.tmp"))
