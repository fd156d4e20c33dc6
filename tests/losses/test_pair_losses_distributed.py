"""MoCoV3Loss, BYOLLoss and SimSiamLoss: 2 gloo processes on halves of a global batch give the loss
and the input gradients of 1 process on the whole batch (one launch for every case)."""

from __future__ import annotations

import pytest
import torch
from two_processes import run_case

import ssl_toolkit.losses

# key -> (class in ssl_toolkit.losses, kwargs, dim). MoCo v3's keys carry a gradient here, so the
# gradient that the other rank's queries send through the gather is checked too.
CASES = {
    "mocov3_t02": ("MoCoV3Loss", {"temperature": 0.2}, 16),
    "mocov3_t1": ("MoCoV3Loss", {"temperature": 1.0}, 8),
    "byol": ("BYOLLoss", {}, 16),
    "simsiam": ("SimSiamLoss", {}, 16),
}
BATCH = 12  # 6 rows per rank


def pair(key: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(len(key))
    dim = CASES[key][2]
    return torch.randn(BATCH, dim, generator=g), torch.randn(BATCH, dim, generator=g)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    cases = {key: (name, kwargs, list(pair(key))) for key, (name, kwargs, _) in CASES.items()}
    return run_case("loss_calls", {"cases": cases}, tmp_path_factory.mktemp("pair_losses"))


@pytest.mark.distributed
@pytest.mark.parametrize("key", sorted(CASES))
def test_two_processes_equal_one(key: str, ranks: list[dict]) -> None:
    name, kwargs, _ = CASES[key]
    a, b = (x.clone().requires_grad_(True) for x in pair(key))
    loss = getattr(ssl_toolkit.losses, name)(**kwargs)(a, b)
    loss.backward()
    per_rank = [r[key] for r in ranks]
    # DDP averages: the global loss is the mean of the rank losses, and each rank's input gradient is
    # world x dL/d(its rows).
    torch.testing.assert_close(torch.stack([r["loss"] for r in per_rank]).mean(), loss.detach())
    torch.testing.assert_close(torch.cat([r["grads"][0] for r in per_rank]) / 2, a.grad, rtol=1e-5, atol=1e-7)
    if b.grad is None:  # stop-gradient target: no rank sends it one either
        assert all(r["grads"][1] is None for r in per_rank)
    else:
        torch.testing.assert_close(torch.cat([r["grads"][1] for r in per_rank]) / 2, b.grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(per_rank[0]["loss"], per_rank[1]["loss"])  # each rank scores its own rows
