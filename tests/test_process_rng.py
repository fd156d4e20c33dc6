"""Per-process random streams: each rank draws its own augmentations and head draws, rank 0 draws
what a 1-process run drew before, and each rank's stream comes back from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from two_processes import run_case

from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.heads.hydra import HydraHead
from ssl_toolkit.losses.mochi import MoCHiLoss
from ssl_toolkit.rng import process_seed, restore_stream_states, seed_streams, stream, stream_states


def _inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "seed": 0,
        "images": torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=g),
        "q": torch.randn(5, 8, generator=g),
        "queue": torch.randn(12, 8, generator=g),
        "labels": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
    }


def test_process_seed_keeps_rank_zero_and_spreads_the_others() -> None:
    assert process_seed(7, 0) == 7
    seeds = {process_seed(7, r) for r in range(1, 64)}
    assert len(seeds) == 63 and 7 not in seeds and 8 not in seeds  # not seed + rank
    assert all(0 <= s < 2**32 for s in seeds)


def test_explicit_generator_drives_every_augment_draw_and_leaves_the_global_one_alone(images) -> None:
    aug = SimCLRAugment(16, blur_p=0.5, grayscale_p=0.5, solarize_p=0.5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = aug(images, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # drawn from the generator given only
    b = aug(images, torch.Generator().manual_seed(5))
    c = aug(images, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])


def test_without_a_generator_the_augment_draws_from_the_toolkits_own_seeded_stream(images) -> None:
    aug = SimCLRAugment(16, blur_p=0.5, grayscale_p=0.5, solarize_p=0.5)
    seed_streams(7)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    first = aug(images)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator did not move
    assert all(torch.equal(x, y) for x, y in zip(first, aug(images, torch.Generator().manual_seed(7))))
    saved = stream_states()
    second = aug(images)
    assert not torch.equal(first[0], second[0])  # the stream goes on
    seed_streams(8)
    torch.manual_seed(7)  # the global seed plays no part
    restore_stream_states(saved)
    assert all(torch.equal(x, y) for x, y in zip(second, aug(images)))  # and comes back from its state
    assert int(stream_states()["seed"]) == 7 and stream("cpu") is stream(torch.device("cpu"))


@pytest.mark.distributed
def test_two_processes_draw_different_crops_mixtures_and_partners_and_get_their_own_stream_back(
    tmp_path: Path,
) -> None:
    inputs = _inputs()
    ranks = run_case("process_streams", inputs, tmp_path)
    r0, r1 = ranks[0]["first"], ranks[1]["first"]
    assert not torch.equal(r0["views"][0], r1["views"][0])  # crop boxes / jitter differ across ranks
    assert not torch.equal(r0["views"][1], r1["views"][1])
    assert not all(torch.equal(a, b) for a, b in zip(r0["mixed"], r1["mixed"]))  # MoCHi mixtures
    assert not torch.equal(r0["partners"], r1["partners"])  # Hydra partner classes

    # Rank 0 draws what one process drew before per-process streams: the augmentation from the
    # toolkit's stream seeded with ``seed``, the heads from the global stream seed_everything
    # started, continued after the model's initialization (not re-seeded).
    seed_streams(inputs["seed"])
    torch.manual_seed(inputs["seed"])
    torch.randn(100)
    aug = SimCLRAugment(16, crop_scale=(0.2, 1.0), blur_p=0.0)
    mochi = MoCHiLoss(0.2, num_hard=4, num_mixed=3, num_query_mixed=2)
    hydra = HydraHead(in_dim=8, num_classes=4, hidden_dim=8, out_dim=4, label_dim=4, gate_hidden_dim=4)
    views = aug(inputs["images"])
    mixed = mochi.synthetic_negatives(inputs["q"], inputs["queue"])
    partners = hydra.partner_classes(inputs["labels"])
    assert all(torch.equal(a, b) for a, b in zip(views, r0["views"]))
    assert all(torch.equal(a, b) for a, b in zip(mixed, r0["mixed"]))
    assert torch.equal(partners, r0["partners"])

    # The checkpoint holds both ranks' states; each rank restores its own and replays its draws.
    for r in ranks:
        assert r["saved_ranks"] == 2
        for key in ("views", "mixed"):
            assert all(torch.equal(a, b) for a, b in zip(r["first"][key], r["replayed"][key])), key
        assert torch.equal(r["first"]["partners"], r["replayed"]["partners"])
