"""LinearProbe: trains beside pretraining without touching it (resume: test_eval_callbacks.py)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from distributed_worker import tiny_module

from ssl_toolkit.callbacks import CALLBACKS, LinearProbe
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.rng import seed_streams


def make_data() -> SyntheticData:
    return SyntheticData(num_samples=64, num_val_samples=32, batch_size=16)


def make_trainer(tmp_path: Path, callbacks: list[pl.Callback], **kwargs: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=tmp_path, **kwargs)  # fmt: skip


def fit_two_steps(tmp_path: Path, callbacks: list[pl.Callback]) -> tuple[pl.LightningModule, pl.Trainer]:
    module = tiny_module(seed=0)
    pl.seed_everything(0, verbose=False)
    seed_streams(0)  # the augmentation's draws (a bare Trainer has no RNGState to seed them)
    # Two steps are the whole epoch, so the validation loop runs at its end (and the sanity check
    # before training): the evaluation loaders must not move the training RNG either.
    trainer = make_trainer(tmp_path, callbacks, max_epochs=1, limit_train_batches=2)
    trainer.fit(module, datamodule=make_data())
    return module, trainer


def test_probe_never_changes_the_pretraining_run(tmp_path: Path) -> None:
    plain, _ = fit_two_steps(tmp_path / "plain", [])
    probe = LinearProbe(lr=0.5)
    probed, trainer = fit_two_steps(tmp_path / "probe", [probe])
    # Same seed, same steps: the probe's gradients, its init and its evaluation loader left the
    # backbone, the head and the augmentation RNG exactly as without it.
    for (name, a), b in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p is q for p in probe.classifier.parameters() for q in probed.parameters())
    initial = LinearProbe().build(probed.backbone.num_features, 4).weight
    assert not torch.equal(probe.classifier.weight.detach(), initial.detach())  # it trained
    assert math.isfinite(float(trainer.callback_metrics["train/linear_loss"]))
    assert 0.0 <= float(trainer.callback_metrics["val/linear_top1"]) <= 1.0
    assert "val/linear_top5" not in trainer.callback_metrics  # 4 classes


def test_probe_rejects_bad_arguments_and_is_in_the_recipe_table() -> None:
    assert CALLBACKS["linear_probe"] is LinearProbe
    for kwargs, name in [({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay")]:
        with pytest.raises(ValueError, match=f"^{name}: "):
            LinearProbe(**kwargs)
