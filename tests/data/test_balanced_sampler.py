"""ClassBalancedBatchSampler: P classes x K samples per batch, every sample once per epoch, and the
split of the batches across processes (explicit rank/world, and 2 real gloo processes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from two_processes import run_case

from ssl_toolkit.data import SyntheticData
from ssl_toolkit.data.balanced_sampler import ClassBalancedBatchSampler

# 4 classes x 12 samples, shuffled: 48 samples, P=2, K=3 -> 8 batches of 6, each class 4 times.
LABELS = torch.arange(48) % 4
LABELS = LABELS[torch.randperm(48, generator=torch.Generator().manual_seed(1))]


def class_counts(batch: list[int], labels: torch.Tensor = LABELS) -> Counter:
    return Counter(labels[batch].tolist())


def test_every_batch_has_p_classes_of_k_samples() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, classes_per_batch=2, samples_per_class=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    for batch in batches:
        assert len(batch) == 6 and len(set(batch)) == 6
        counts = class_counts(batch)
        assert len(counts) == 2 and set(counts.values()) == {3}
        # K consecutive indices share a class.
        assert len({int(LABELS[i]) for i in batch[:3]}) == 1 and len({int(LABELS[i]) for i in batch[3:]}) == 1


def test_an_epoch_visits_every_sample_once_and_epochs_differ() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, classes_per_batch=2, samples_per_class=3, seed=5)
    first, second = list(sampler), list(sampler)  # the epoch advances with each iteration
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(48))
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first  # same seed and epoch -> same batches
    assert list(ClassBalancedBatchSampler(LABELS, 2, 3, seed=6)) != first


def test_classes_are_drawn_equally_often_when_p_does_not_divide_c() -> None:
    labels = torch.arange(5 * 20) % 5  # 5 classes x 20
    sampler = ClassBalancedBatchSampler(labels, classes_per_batch=2, samples_per_class=2)
    batches = list(sampler)  # 25 batches -> 50 class picks -> 10 per class
    picks = Counter(c for b in batches for c in class_counts(b, labels))
    assert all(len(class_counts(b, labels)) == 2 for b in batches)
    assert set(picks.values()) == {10}


def test_unknown_labels_are_never_drawn_and_bad_sizes_fail() -> None:
    labels = torch.cat([LABELS, torch.full((10,), -1)])
    drawn = {i for b in ClassBalancedBatchSampler(labels, 2, 3) for i in b}
    assert max(drawn) < 48
    with pytest.raises(ValueError, match="classes_per_batch"):
        ClassBalancedBatchSampler(LABELS, classes_per_batch=5, samples_per_class=3)
    with pytest.raises(ValueError, match="samples_per_class: must be an int >= 1"):
        ClassBalancedBatchSampler(LABELS, classes_per_batch=2, samples_per_class=0)


def test_a_class_smaller_than_k_repeats_its_samples() -> None:
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 10)  # class 1 has 2 < K = 3 samples
    for batch in ClassBalancedBatchSampler(labels, classes_per_batch=2, samples_per_class=3):
        counts = class_counts(batch, labels)
        assert sorted(counts.values()) == [3, 3]
        small = [i for i in batch if labels[i] == 1]
        if small:  # both samples of class 1, one of them twice
            assert sorted(set(small)) == [10, 11] and len(small) == 3


def test_explicit_ranks_split_the_global_batches() -> None:
    one = ClassBalancedBatchSampler(LABELS, 2, 3, seed=3, rank=0, world_size=1).global_batches(epoch=0)
    ranks = [list(ClassBalancedBatchSampler(LABELS, 2, 3, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert [len(r) for r in ranks] == [4, 4]
    assert ranks[0] == one[0::2] and ranks[1] == one[1::2]
    seen = [i for r in ranks for b in r for i in b]
    assert sorted(seen) == list(range(48))  # disjoint across ranks, all samples covered
    for r in ranks:
        for batch in r:
            assert sorted(class_counts(batch).values()) == [3, 3]


@pytest.mark.distributed
def test_two_processes_take_alternate_batches(tmp_path: Path) -> None:
    ranks = run_case("balanced_sampler", {"labels": LABELS, "p": 2, "k": 3, "seed": 3}, tmp_path)
    one = ClassBalancedBatchSampler(LABELS, 2, 3, seed=3, rank=0, world_size=1).global_batches(epoch=0)
    assert [r["len"] for r in ranks] == [4, 4]
    assert ranks[0]["batches"] == one[0::2] and ranks[1]["batches"] == one[1::2]
    for r in ranks:
        for batch in r["batches"]:
            assert sorted(class_counts(batch).values()) == [3, 3]
    assert not {i for b in ranks[0]["batches"] for i in b} & {i for b in ranks[1]["batches"] for i in b}


def test_datamodule_yields_class_balanced_batches() -> None:
    data = SyntheticData(num_samples=64, num_val_samples=16, num_classes=4, batch_size=16, classes_per_batch=2)
    loader = data.train_dataloader()
    assert len(loader) == 4
    for _, labels, index in loader:
        assert labels.shape == (16,)
        assert sorted(Counter(labels.tolist()).values()) == [8, 8]
        torch.testing.assert_close(labels, data.train_labels()[index])
    assert data.has_labels
    with pytest.raises(ValueError, match="classes_per_batch: batch_size 16 is not a multiple of 3"):
        SyntheticData(batch_size=16, classes_per_batch=3)


def test_datamodule_starts_at_the_trainers_epoch() -> None:
    # A resumed run (trainer already at epoch 3) draws epoch 3's batches, not epoch 0's again.
    data = SyntheticData(num_samples=64, num_val_samples=16, num_classes=4, batch_size=16, classes_per_batch=2)
    data.trainer = SimpleNamespace(current_epoch=3)
    sampler = data.train_dataloader().batch_sampler
    assert list(sampler) == sampler.global_batches(epoch=3)
