"""The validation-loop plumbing: the plan of loaders, the DataModule's loaders, the feature store."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from distributed_worker import tiny_module

from ssl_toolkit.callbacks import KNNProbe, LinearProbe, RankMe
from ssl_toolkit.callbacks.eval_features import FeatureStore, project
from ssl_toolkit.callbacks.eval_plan import EvalPlan, FeatureRequest, plan_evaluation
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.data.subset import fixed_subset


def make_data() -> SyntheticData:
    return SyntheticData(num_samples=64, num_val_samples=16, batch_size=8)


def plan_for(callbacks: list, data: SyntheticData) -> EvalPlan:
    trainer = SimpleNamespace(callbacks=callbacks, datamodule=data)
    for cb in callbacks:
        cb.make_plan(trainer)
    return callbacks[0].plan


def test_plan_loaders_in_fixed_order_and_rankme_shares_the_bank() -> None:
    data = make_data()
    data.setup()
    assert data.val_dataloader() == []  # no evaluation callback: no validation loop
    # Whole-split bank: RankMe reads its rows from it, no loader of its own.
    rank_cb = RankMe(num_samples=20)
    plan = plan_for([rank_cb, KNNProbe(), LinearProbe()], data)
    assert plan.layout() == ("labelled val", "labelled train") and plan.loaders[1].rows is None
    assert rank_cb.served == {1: ("subset",)}
    # A bank subset that is RankMe's own draw (same size and seed): shared too.
    plan = plan_for([KNNProbe(bank_size=20, bank_seed=4), RankMe(num_samples=20, seed=4)], data)
    assert plan.layout() == ("labelled val", "labelled train")
    # Another draw: a third loader, after the first two whatever the callback order.
    rank_cb = RankMe(num_samples=20, seed=5)
    plan = plan_for([rank_cb, KNNProbe(bank_size=30)], data)
    assert plan.layout() == ("labelled val", "labelled train", "training train") and rank_cb.served == {2: ("subset",)}
    loaders = data.val_dataloader()
    assert [len(loader.dataset) for loader in loaders] == [16, 30, 20]
    index = torch.cat([b[2] for b in loaders[2]])
    assert torch.equal(index, rank_cb.indices) and torch.equal(torch.cat([b[2] for b in loaders[1]]),
                                                               fixed_subset(64, 30, 0))  # fmt: skip
    assert rank_cb.store.names == ("subset",) and not rank_cb.store.rows  # its loader holds only its rows
    # Different rows of one request: one loader of the union (None = whole split wins).
    bank = FeatureRequest("train", source="labelled")
    assert plan_evaluation([bank, replace(bank, rows=(0, 1, 2))]).loaders[0].rows is None
    union = plan_evaluation([replace(bank, rows=(1, 4)), replace(bank, rows=(1, 2))]).loaders[0].rows
    assert union == (1, 2, 4)
    # A separate labelled eval_root bank never serves the training data (other images).
    split = plan_evaluation([bank, FeatureRequest("train", (0, 1, 2))], shared=False)
    assert split.layout() == ("labelled train", "training train")
    # Views are never served by un-augmented loaders, nor by views of other rows (other chunks) or
    # another seed; identical requests for views share one loader.
    views = [FeatureRequest("val", rows, views=2, seed=seed) for rows, seed in [((1, 2), 3), ((2, 5), 3), ((2, 5), 4)]]
    views.append(views[-1])
    plan = plan_evaluation([FeatureRequest("val", source="labelled"), *views])
    assert plan.layout() == ("labelled val", "training val x2", "training val x2", "training val x2")
    assert [plan.loader_of(r) for r in views] == [1, 2, 3, 3]


def test_feature_request_rejects_what_no_loader_can_serve() -> None:
    with pytest.raises(ValueError, match="^split: "):
        FeatureRequest("test")
    with pytest.raises(ValueError, match="^source: "):
        FeatureRequest("val", source="other")
    with pytest.raises(ValueError, match="^seed: "):
        FeatureRequest("val", seed=3)
    with pytest.raises(ValueError, match="^rows: "):
        FeatureRequest("val", (3, 1))
    with pytest.raises(ValueError, match="^request: "):
        plan_evaluation([]).loader_of(FeatureRequest("val"))


def test_eval_loaders_never_draw_from_the_global_rng() -> None:
    data = make_data()
    plan_for([KNNProbe()], data)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    for loader in data.val_dataloader():
        for _ in loader:
            pass
    assert torch.equal(torch.random.get_rng_state(), before)


def test_store_keeps_only_its_names_gathers_sorted_and_clears() -> None:
    store = FeatureStore(("val",))
    feats = torch.arange(12.0).reshape(6, 2)
    store.add("val", feats[3:], torch.tensor([0, 1, 2]), torch.tensor([5, 3, 4]))
    store.add("val", feats[:3], torch.tensor([3, 4, 5]), torch.tensor([2, 0, 1]))
    store.add("bank", feats, torch.zeros(6), torch.arange(6))  # not one of its names
    assert len(store) == 6 and store.split("bank") is None
    split = store.split("val")
    assert torch.equal(split.index, torch.arange(6)) and split.labels.dtype == torch.long
    torch.testing.assert_close(split.feats, feats[[1, 2, 0, 4, 5, 3]])
    assert store.split("val") is split  # gathered once per evaluation
    store.clear()
    assert len(store) == 0 and store.split("val") is None


def test_project_is_the_eval_mode_head_and_restores_train_mode() -> None:
    module = tiny_module(seed=0).train()
    feats = torch.randn(10, module.backbone.num_features)
    out = project(module, feats, chunk_size=3)
    assert module.training and module.head.training and not out.requires_grad
    module.eval()
    torch.testing.assert_close(out, module.head.embed(feats))


def test_fit_without_datamodule_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="^datamodule: RankMe needs trainer.fit"):
        RankMe().setup(SimpleNamespace(datamodule=None, callbacks=[]), tiny_module(), "fit")


def test_store_keeps_only_the_wanted_rows_of_a_shared_loader() -> None:
    data = make_data()
    rank_cb = RankMe(num_samples=20, seed=2)
    plan_for([KNNProbe(), rank_cb], data)  # RankMe reads the (whole-split) bank
    assert rank_cb.served == {1: ("subset",)} and torch.equal(rank_cb.store.rows["subset"], rank_cb.indices)
    for batch in data.val_dataloader()[1]:
        rank_cb.store.add("subset", batch[0].flatten(1).float(), batch[1], batch[2])
    assert len(rank_cb.store) == 20 and torch.equal(rank_cb.store.split("subset").index, rank_cb.indices)
