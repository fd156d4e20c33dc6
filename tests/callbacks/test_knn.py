"""KNNProbe: top-1/top-5 against a direct computation, unknown labels, the bank subset, arguments."""

from __future__ import annotations

import pytest
import torch
from distributed_worker import run_validation, tiny_module

from ssl_toolkit.callbacks import CALLBACKS, KNNProbe
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.metrics import knn_scores


def test_top1_and_top5_equal_direct_knn_and_unknown_labels_leave_the_bank() -> None:
    module = tiny_module(seed=0).eval()
    data = SyntheticData(num_samples=48, num_val_samples=24, num_classes=8, batch_size=16)
    data.setup()
    data.train_set.labels[:6] = -1  # unlabelled train images must not vote (nor crash the scatter)
    metrics = run_validation(module, data, [KNNProbe(k=10, temperature=0.1, chunk_size=5)])

    bank, query = module.embed(data.train_set.images[6:]), module.embed(data.val_set.images)
    scores = knn_scores(bank, data.train_set.labels[6:], query, k=10, temperature=0.1, num_classes=8)
    labels = data.val_set.labels
    top1 = float((scores.argmax(1) == labels).float().mean())
    top5 = float((scores.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean())
    assert metrics == pytest.approx({"val/knn_top1": top1, "val/knn_top5": top5}, abs=1e-6)
    assert metrics["val/knn_top5"] > metrics["val/knn_top1"]


def test_bank_size_is_a_fixed_seeded_subset_of_the_train_split() -> None:
    module = tiny_module(seed=0).eval()
    data = SyntheticData(num_samples=48, num_val_samples=24, num_classes=8, batch_size=16)
    knn = KNNProbe(k=5, bank_size=20, bank_seed=3)
    metrics = run_validation(module, data, [knn])
    assert knn.plan.layout() == ("labelled val", "labelled train") and len(data.val_dataloader()[1].dataset) == 20
    rows = fixed_subset(48, 20, 3)
    assert torch.equal(knn.bank_rows(48), rows) and KNNProbe(bank_size=48).bank_rows(48) is None
    bank, query = module.embed(data.train_set.images[rows]), module.embed(data.val_set.images)
    scores = knn_scores(bank, data.train_set.labels[rows], query, k=5, num_classes=8)
    expected = float((scores.argmax(1) == data.val_set.labels).float().mean())
    assert metrics["val/knn_top1"] == pytest.approx(expected, abs=1e-6)


def test_knn_rejects_bad_arguments_and_is_in_the_recipe_table() -> None:
    assert CALLBACKS["knn"] is KNNProbe
    for kwargs, name in [({"k": 0}, "k"), ({"k": 2.5}, "k"), ({"temperature": 0.0}, "temperature"),
                         ({"chunk_size": 0}, "chunk_size"), ({"bank_size": 0}, "bank_size"),
                         ({"bank_seed": -1}, "bank_seed")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"^{name}: "):
            KNNProbe(**kwargs)
