"""RankMe: the subset draw, its state, embedding only the subset (or reading the k-NN bank), modules without a head."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_worker import run_validation, tiny_module
from torch import Tensor, nn

from ssl_toolkit.callbacks import CALLBACKS, KNNProbe, RankMe
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.metrics import rankme


def make_data() -> SyntheticData:
    return SyntheticData(num_samples=64, num_val_samples=32, batch_size=16)


def test_subset_is_random_sorted_seeded_and_drawn_once() -> None:
    cb = RankMe(num_samples=20, seed=0)
    first = cb.draw(64).clone()
    assert len(first) == 20 == len(first.unique()) and torch.equal(first, first.sort().values)
    assert not torch.equal(first, torch.arange(20)) and int(first.max()) < 64
    assert torch.equal(cb.draw(64), first)  # kept, not redrawn
    assert torch.equal(RankMe(num_samples=20, seed=0).draw(64), first)
    assert not torch.equal(RankMe(num_samples=20, seed=1).draw(64), first)
    assert torch.equal(RankMe(num_samples=100).draw(64), torch.arange(64))  # capped at N


def test_state_roundtrip_and_a_stored_subset_too_large_for_the_data() -> None:
    cb = RankMe(num_samples=20, seed=0)
    assert cb.state_dict() == {}
    cb.draw(64)
    other = RankMe(num_samples=20, seed=5)
    other.load_state_dict(cb.state_dict())
    assert torch.equal(other.draw(64), cb.indices)
    with pytest.raises(ValueError, match="^num_samples: "):
        other.draw(10)


def test_alone_it_embeds_only_its_subset_with_the_same_values_as_from_the_k_nn_bank() -> None:
    module, data = tiny_module(seed=0), make_data()
    rows: list[int] = []
    inner = module.embed

    def spy(images: Tensor) -> Tensor:
        rows.append(images.shape[0])
        return inner(images)

    module.embed = spy  # type: ignore[method-assign]
    cb = RankMe(num_samples=20, seed=0)
    alone = run_validation(module, data, [cb])
    assert sum(rows) == 20 and cb.plan.layout() == ("training train",)
    shared_cb = RankMe(num_samples=20, seed=0)
    shared = run_validation(module, data, [shared_cb, KNNProbe(k=5)])
    assert sum(rows) == 20 + 64 + 32 and shared_cb.plan.layout() == ("labelled val", "labelled train")  # no third
    assert alone == pytest.approx({k: v for k, v in shared.items() if "rankme" in k}, rel=1e-5)
    module.eval()
    feats = inner(data.train_set.images[cb.indices])
    assert alone["val/rankme"] == pytest.approx(rankme(feats), rel=1e-5)
    assert alone["val/rankme_proj"] == pytest.approx(rankme(module.head.embed(feats)), rel=1e-5)


class PlainEmbedder(nn.Module):
    """Any module with ``embed(uint8 images) -> (B, F)`` and no projector head."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 8)

    def embed(self, images: Tensor) -> Tensor:
        return self.linear(images.flatten(1).float() / 255)


def test_a_module_without_head_gets_backbone_rankme_only() -> None:
    cb, data = RankMe(num_samples=30), make_data()
    data.setup()
    cb.draw(64)
    images, labels = data.train_set.images, data.train_set.labels
    split = EmbeddedSplit(PlainEmbedder().embed(images), None, labels, torch.arange(64))
    metrics = cb.score(PlainEmbedder(), split)
    assert set(metrics) == {"val/rankme"} and 1.0 <= metrics["val/rankme"] <= 8.0


def test_rankme_rejects_bad_arguments_and_is_in_the_recipe_table() -> None:
    assert CALLBACKS["rankme"] is RankMe
    for kwargs, name in [({"num_samples": 0}, "num_samples"), ({"eps": 0.0}, "eps"), ({"seed": 1.5}, "seed"),
                         ({"seed": -1}, "seed")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"^{name}: "):
            RankMe(**kwargs)


def test_alpha_req_option_logs_alpha_req_of_the_same_rows_and_nan_when_collapsed() -> None:
    module, data = tiny_module(seed=0), make_data()
    cb = RankMe(num_samples=40, seed=0, alpha_req=True)
    got = run_validation(module, data, [cb])
    assert set(got) == {"val/rankme", "val/rankme_proj", "val/alpha_req", "val/alpha_req_proj"}
    module.eval()
    with torch.no_grad():
        feats = module.embed(data.train_set.images[cb.indices])
        proj = module.head.embed(feats)
    for name, x in (("val/alpha_req", feats), ("val/alpha_req_proj", proj)):
        # Plain computation: eigenvalues of the centred covariance, 1/k-weighted least squares of
        # log lambda_k on -log k over the ranks the default range keeps (6..100, or all below D = 20).
        lam = torch.linalg.eigvalsh(torch.cov(x.double().T, correction=0)).flip(0)
        start = 5 if x.shape[1] >= 20 else 0
        k = torch.arange(1, len(lam) + 1, dtype=torch.float64)
        keep = (lam > 1e-12 * lam[0]) & (k > start) & (k <= 100)
        w, u, y = 1 / k[keep], -k[keep].log(), lam[keep].log()
        mu, my = (w * u).sum() / w.sum(), (w * y).sum() / w.sum()
        slope = float((w * (u - mu) * (y - my)).sum() / (w * (u - mu) ** 2).sum())
        assert got[name] == pytest.approx(slope, rel=1e-4), name
    assert "val/alpha_req" not in run_validation(module, data, [RankMe(num_samples=40, seed=0)])
    # A collapsed representation (every row the same) has no spectrum to fit: NaN, training goes on.
    split = EmbeddedSplit(torch.ones(64, 8), None, torch.zeros(64, dtype=torch.long), torch.arange(64))
    metrics = RankMe(num_samples=30, alpha_req=True)
    metrics.draw(64)
    assert math.isnan(metrics.score(PlainEmbedder(), split)["val/alpha_req"])
    with pytest.raises(ValueError, match="^alpha_req: "):
        RankMe(alpha_req="yes")  # type: ignore[arg-type]


def test_rows_missing_from_the_evaluation_are_said_once_and_none_gives_no_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # trainer.limit_val_batches embeds only the first batches of the bank: the subset may be partly
    # or entirely absent. Partly: scored on the rows there are (the same value as those rows alone),
    # said once. Entirely: no metric (not an error inside evaluation), said once.
    cb = RankMe(num_samples=30)
    cb.draw(64)
    feats = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(64, dtype=torch.long)
    first = cb.indices[cb.indices < 32]
    part = EmbeddedSplit(feats[:32], None, labels[:32], torch.arange(32))
    with caplog.at_level("WARNING"):
        metrics = cb.score(PlainEmbedder(), part)
        cb.score(PlainEmbedder(), part)
    assert metrics["val/rankme"] == pytest.approx(rankme(feats[first], cb.eps))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("RankMe:")]
    assert said == [f"RankMe: the evaluation embedded {first.numel()} of its 30 samples "
                    "(trainer.limit_val_batches); val/rankme is computed on those"]  # fmt: skip
    caplog.clear()
    cb = RankMe(num_samples=30)
    cb.indices = torch.arange(40, 64)[:30]
    with caplog.at_level("WARNING"):
        assert cb.score(PlainEmbedder(), part) == {}
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("RankMe:")]
    assert len(said) == 1 and "none of its 24 samples" in said[0] and "val/rankme not computed" in said[0]


def test_the_sanity_check_is_not_reported_as_a_partial_evaluation(caplog) -> None:
    import logging

    cb = RankMe(num_samples=8, seed=0)
    cb.indices = torch.arange(8)
    split = EmbeddedSplit(torch.randn(4, 6), None, torch.full((4,), -1), torch.arange(4))  # 4 of the 8 rows
    with caplog.at_level(logging.WARNING):
        cb.sanity_checking = True
        cb.score(None, split)
        assert "embedded 4 of its 8" not in caplog.text
        cb.sanity_checking = False
        cb.score(None, split)
    assert "embedded 4 of its 8" in caplog.text
