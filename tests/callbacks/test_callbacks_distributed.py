"""KNNProbe, RankMe (with alpha-ReQ) and LinearProbe give the same numbers in 2 processes (gloo, CPU) as in 1, and
the gathered labels and sample indices are exact int64 (indices above 2**24)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from distributed_worker import evaluate_callbacks, tiny_module
from two_processes import run_case

from ssl_toolkit.data import SyntheticData

# Odd split sizes, so the DistributedSampler pads shards and gather_split must drop the repeats.
DATA = {"num_samples": 35, "num_val_samples": 15, "num_classes": 6, "batch_size": 8, "seed": 1}


@pytest.mark.distributed
def test_eval_callbacks_two_processes_equal_one(tmp_path: Path) -> None:
    module = tiny_module(seed=0)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, module.backbone.num_features, generator=g)
    labels = torch.randint(0, DATA["num_classes"], (12,), generator=g)
    inputs = {"module": module.state_dict(), "data": DATA, "feats": feats, "labels": labels}
    ranks = run_case("eval_callbacks", inputs, tmp_path)
    one = evaluate_callbacks(module, SyntheticData(**DATA), inputs)

    names = ["val/knn_top1", "val/knn_top5", "val/rankme", "val/rankme_proj", "val/linear_top1", "val/linear_top5"]
    assert set(names) <= one.keys()
    # With the k-NN bank = whole train split, RankMe reads the bank; alone it has its own loader.
    assert one["roles"] == ("labelled val", "labelled train") and one["subset_roles"] == ("training train",)
    for r in ranks:
        for name in names + [f"subset/val/{m}" for m in ("rankme", "rankme_proj", "alpha_req", "alpha_req_proj")]:
            assert r[name] == pytest.approx(one[name], rel=1e-5, abs=1e-6), name
        # The probe's gradients were averaged over the two half batches: same weights as 1 process.
        torch.testing.assert_close(r["probe_weight"], one["probe_weight"], rtol=1e-5, atol=1e-6)
    # RankMe's rows taken from the k-NN bank or embedded alone: the same values.
    for name in ["val/rankme", "val/rankme_proj"]:
        assert one[f"subset/{name}"] == pytest.approx(one[name], rel=1e-5)
    # Each rank's loss is on its own half batch, so the comparison above is not trivial.
    assert ranks[0]["probe_loss"] != pytest.approx(ranks[1]["probe_loss"])
    assert one["val/rankme"] > 1.5 and math.isfinite(one["subset/val/alpha_req"])


@pytest.mark.distributed
def test_gathered_labels_and_indices_are_exact_int64_above_2_to_the_24(tmp_path: Path) -> None:
    # 2**24 + odd: not representable in float32 (the old packed float column rounded them).
    index = torch.tensor([2**24 + 7, 2**24 + 1, 2**31 + 3, 2**24 + 5, 5, 2**40 + 1, 2**24 + 3], dtype=torch.long)
    labels = index * 3 + 1  # large labels too
    feats = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    assert float(torch.tensor(2**24 + 1).float()) != 2**24 + 1  # the premise
    ranks = run_case("gather_int64", {"feats": feats, "labels": labels, "index": index}, tmp_path)
    order = index.argsort()
    for r in ranks:  # every process: all 7 rows (4 + 3: uneven shards), sorted by index, exact
        assert r["index"].dtype == r["labels"].dtype == torch.long
        assert torch.equal(r["index"], index[order]) and torch.equal(r["labels"], labels[order])
        assert torch.equal(r["feats"], feats[order])
