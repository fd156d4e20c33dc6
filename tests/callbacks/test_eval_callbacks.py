"""KNNProbe + LinearProbe + RankMe in one fit (Lightning's validation loop): values equal an
independent computation, forward passes are shared, ModelCheckpoint can monitor RankMe, and state survives resume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from distributed_worker import tiny_module
from torch import Tensor

from ssl_toolkit.callbacks import KNNProbe, LinearProbe, RankMe
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.metrics import knn_classify, rankme

K, TEMPERATURE, SUBSET = 20, 0.1, 40


def make_data() -> SyntheticData:
    return SyntheticData(num_samples=64, num_val_samples=32, batch_size=16)


def make_trainer(root: Path, callbacks: list[pl.Callback], max_epochs: int) -> pl.Trainer:
    # Two training steps per epoch keep it fast; the evaluation still embeds all 64 + 32 images.
    return pl.Trainer(max_epochs=max_epochs, limit_train_batches=2, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=root, num_sanity_val_steps=0)  # fmt: skip


class Record(pl.Callback):
    """After the evaluation callbacks: RankMe's subset and the logged metrics of every epoch."""

    def __init__(self, rankme_cb: RankMe) -> None:
        self.rankme_cb, self.indices, self.metrics = rankme_cb, [], []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.indices.append(self.rankme_cb.indices.clone())
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs with the three callbacks (RankMe listed first, ModelCheckpoint before them all)."""
    root = tmp_path_factory.mktemp("fit")
    module, data = tiny_module(seed=0), make_data()
    embedded: list[tuple[int, int]] = []  # (epoch, rows) per embed call
    inner = module.embed

    def spy(images: Tensor) -> Tensor:
        embedded.append((module.current_epoch, images.shape[0]))
        return inner(images)

    module.embed = spy  # type: ignore[method-assign]
    rank_cb = RankMe(num_samples=SUBSET, seed=0)
    probe, record = LinearProbe(lr=0.5), Record(rank_cb)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", monitor="val/rankme", mode="max", save_top_k=1)
    trainer = make_trainer(root, [ckpt, rank_cb, KNNProbe(k=K, temperature=TEMPERATURE), probe, record], 2)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(root / "end.ckpt")
    module.embed = inner  # type: ignore[method-assign]
    return {"module": module.eval(), "data": data, "trainer": trainer, "embedded": embedded, "record": record,
            "ckpt": ckpt, "probe": copy.deepcopy(probe.state_dict()), "root": root}  # fmt: skip


def test_knn_top1_equals_direct_knn_classify(run: dict[str, Any]) -> None:
    module, data = run["module"], run["data"]
    bank, query = module.embed(data.train_set.images), module.embed(data.val_set.images)
    pred = knn_classify(bank, data.train_set.labels, query, k=K, temperature=TEMPERATURE, num_classes=4)
    expected = float((pred == data.val_set.labels).float().mean())
    assert float(run["trainer"].callback_metrics["val/knn_top1"]) == pytest.approx(expected, abs=1e-6)
    assert "val/knn_top5" not in run["trainer"].callback_metrics  # 4 classes


def test_rankme_is_a_fixed_random_subset_and_equals_direct_rankme(run: dict[str, Any]) -> None:
    first, second = run["record"].indices
    assert torch.equal(first, second) and len(first) == SUBSET == len(first.unique())
    assert not torch.equal(first, torch.arange(SUBSET)) and int(first.max()) < 64
    module, images = run["module"], run["data"].train_set.images[first]
    feats = module.embed(images)
    metrics = run["trainer"].callback_metrics
    assert float(metrics["val/rankme"]) == pytest.approx(rankme(feats), rel=1e-5)
    assert float(metrics["val/rankme_proj"]) == pytest.approx(rankme(module.head.embed(feats)), rel=1e-5)


def test_each_split_is_embedded_once_per_epoch(run: dict[str, Any]) -> None:
    # Train bank (64) + val (32) per epoch, by the validation loop: RankMe took its rows from the
    # k-NN bank and the probe read the same val outputs as k-NN, although RankMe is listed first.
    for epoch in (0, 1):
        assert sorted(n for e, n in run["embedded"] if e == epoch) == [16] * 6


def test_model_checkpoint_monitors_rankme(run: dict[str, Any]) -> None:
    ckpt = run["ckpt"]
    values = [m["val/rankme"] for m in run["record"].metrics]
    assert Path(ckpt.best_model_path).is_file()
    assert float(ckpt.best_model_score) == pytest.approx(max(values))
    assert all(set(m) >= {"val/knn_top1", "val/linear_top1", "val/rankme_proj"} for m in run["record"].metrics)


def test_probe_and_subset_state_survive_resume(run: dict[str, Any]) -> None:
    restored: dict[str, Any] = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            restored.update(probe=copy.deepcopy(probe.state_dict()), indices=rank_cb.indices.clone())

    probe, rank_cb = LinearProbe(lr=0.5), RankMe(num_samples=SUBSET, seed=7)  # another seed: restored wins
    trainer = make_trainer(run["root"] / "resume", [probe, rank_cb, Snapshot()], max_epochs=3)
    trainer.fit(tiny_module(seed=1), datamodule=make_data(), ckpt_path=run["root"] / "end.ckpt")
    saved = run["probe"]
    assert torch.equal(restored["indices"], run["record"].indices[-1])
    for key, value in saved["classifier"].items():
        assert torch.equal(restored["probe"]["classifier"][key], value), key
    assert (
        saved["optimizer"]["state"]
        and restored["probe"]["optimizer"]["param_groups"] == saved["optimizer"]["param_groups"]
    )
    for i, state in saved["optimizer"]["state"].items():
        assert torch.equal(restored["probe"]["optimizer"]["state"][i]["momentum_buffer"], state["momentum_buffer"])
    assert trainer.global_step == 6 and not torch.equal(probe.classifier.weight, saved["classifier"]["weight"])
