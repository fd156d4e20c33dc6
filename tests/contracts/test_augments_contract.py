"""Contract shared by every entry of ``AUGMENTS`` (what ``SSLModule`` relies on), driven by ``CASES``.

uint8 (B, C, H, W) in -> a list of float views (global views first), normalized, every sample and
view drawn independently, reproducible under the toolkit's seed (``rng.seed_streams``); ``view_sizes``
declares the sides; ``eval_view`` deterministic at the global size.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from contracts.constructor import assert_plain_typed_constructor
from torch import nn

from ssl_toolkit.augment import AUGMENTS
from ssl_toolkit.rng import seed_streams

# The contract table: one row per entry of AUGMENTS (a missing row fails
# test_every_augment_has_exactly_one_row): tiny constructor keywords and the view sides they give.
CASES: dict[str, dict[str, Any]] = {
    "simclr": {"kwargs": {"size": 16, "num_views": 3}, "sides": [16, 16, 16]},
    "multicrop": {"kwargs": {"size": 16, "num_global": 2, "local_size": 8, "num_local": 2}, "sides": [16, 16, 8, 8]},
}
BATCH = 6


def images(channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (BATCH, channels, 20, 20), dtype=torch.uint8, generator=g)


def test_every_augment_has_exactly_one_row() -> None:
    assert set(CASES) == set(AUGMENTS), f"missing: {set(AUGMENTS) - set(CASES)}, extra: {set(CASES) - set(AUGMENTS)}"


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_plain_typed_constructor(name: str) -> None:
    cls = AUGMENTS[name]
    assert issubclass(cls, nn.Module) and callable(getattr(cls, "eval_view", None))
    assert_plain_typed_constructor(cls, set(CASES[name]["kwargs"]))


@pytest.mark.parametrize("name", sorted(AUGMENTS))
@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_float_normalized_and_sized(name: str, channels: int) -> None:
    views = AUGMENTS[name](**CASES[name]["kwargs"])(images(channels))
    assert [v.shape[-1] for v in views] == CASES[name]["sides"]
    declared = AUGMENTS[name](**CASES[name]["kwargs"]).view_sizes  # recipe/build.py reads it
    assert declared["size"] == views[0].shape[-1] and set(declared.values()) == set(CASES[name]["sides"])
    for v in views:
        assert v.dtype == torch.float32 and v.shape[:2] == (BATCH, 3) and v.shape[-2] == v.shape[-1]
        assert torch.isfinite(v).all() and -5 < v.mean() < 5  # normalized, not [0, 255]


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_every_sample_and_view_draws_its_own_parameters(name: str) -> None:
    same = images()[:1].expand(BATCH, -1, -1, -1).contiguous()  # one image, B times
    views = AUGMENTS[name](**CASES[name]["kwargs"])(same)
    first = views[0]
    assert not torch.allclose(first[0], first[1])  # two samples of one image differ
    assert not torch.allclose(views[0][0], views[1][0])  # two views of one sample differ


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_reproducible_under_a_seed_and_deterministic_eval_view(name: str) -> None:
    augment = AUGMENTS[name](**CASES[name]["kwargs"])
    seed_streams(7)  # the toolkit's seed; the global one plays no part
    torch.manual_seed(1)
    a = augment(images())
    seed_streams(7)
    torch.manual_seed(2)
    b = augment(images())
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    e1, e2 = augment.eval_view(images()), augment.eval_view(images())
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert e1.shape == (BATCH, 3, CASES[name]["sides"][0], CASES[name]["sides"][0])
