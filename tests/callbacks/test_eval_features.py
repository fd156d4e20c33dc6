"""The per-step feature cache, the projector pass, and the evaluation schedule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from distributed_worker import tiny_module

from ssl_toolkit.callbacks import KNNProbe, LinearProbe, RankMe
from ssl_toolkit.callbacks.eval_features import clear_cache, is_cached, others_need, project, split_features
from ssl_toolkit.data import SyntheticData


def test_split_features_are_memoized_for_one_step_only() -> None:
    module, data = tiny_module(seed=0), SyntheticData(num_samples=24, num_val_samples=16, batch_size=8)
    try:
        val = split_features(module, data, "val", step=3)
        assert val.feats.shape == (16, module.backbone.num_features) and torch.equal(val.index, torch.arange(16))
        assert split_features(module, data, "val", step=3) is val and is_cached(module, data, "val", 3)
        assert split_features(module, data, "val") is not val  # no step: never cached
        train = split_features(module, data, "train", step=4)  # a new step evicts the old one
        assert not is_cached(module, data, "val", 3) and is_cached(module, data, "train", 4)
        torch.testing.assert_close(train.feats, module.eval().embed(data.train_set.images))
    finally:
        clear_cache()
    assert not is_cached(module, data, "train", 4)


def test_project_is_the_eval_mode_head_and_restores_train_mode() -> None:
    module = tiny_module(seed=0).train()
    feats = torch.randn(10, module.backbone.num_features)
    out = project(module, feats, chunk_size=3)
    assert module.training and module.head.training and not out.requires_grad
    module.eval()
    torch.testing.assert_close(out, module.head.embed(feats))


def test_schedule_and_who_needs_the_whole_train_split() -> None:
    knn, probe, rank_cb = KNNProbe(every_n_epochs=2), LinearProbe(), RankMe()
    data = SyntheticData(num_samples=24, num_val_samples=16, batch_size=8)
    trainer = SimpleNamespace(current_epoch=0, callbacks=[rank_cb, knn, probe], datamodule=data)
    assert not knn.due(trainer) and probe.due(trainer)
    assert not others_need(trainer, rank_cb, "train") and others_need(trainer, rank_cb, "val")
    trainer.current_epoch = 1
    assert knn.due(trainer) and others_need(trainer, rank_cb, "train") and not others_need(trainer, knn, "train")
    data.train_set.labels[:] = -1  # unlabelled: the label-needing callbacks are never due
    assert rank_cb.due(trainer) and not knn.due(trainer) and not probe.due(trainer)
    assert not others_need(trainer, rank_cb, "train")


def test_fit_without_datamodule_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="^datamodule: RankMe needs trainer.fit"):
        RankMe().setup(SimpleNamespace(datamodule=None), tiny_module(), "fit")
