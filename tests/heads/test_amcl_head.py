"""AMCLHead: independent heads, gradients into every projector and temperature net, logs, embed."""

from __future__ import annotations

import pytest
import torch

from ssl_toolkit.heads.amcl import AMCLHead
from ssl_toolkit.heads.base import BatchInfo, Views
from ssl_toolkit.losses.amcl import AMCLLoss


def batch_info(n: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(n, dtype=torch.long), index=torch.arange(n), step=0, epoch=0)


def small_head(**kw: object) -> AMCLHead:
    torch.manual_seed(0)
    return AMCLHead(in_dim=12, num_heads=3, hidden_dim=16, out_dim=8, temperature_hidden_dim=6, **kw)


def test_gradients_reach_every_head_and_temperature_net() -> None:
    head = small_head()
    feats = [torch.randn(6, 12, requires_grad=True) for _ in range(2)]
    out = head(Views(feats), batch_info(6))
    out.loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    # Heads start independent: different weights, hence different per-head losses.
    w = [g[0].weight for g in head.projectors]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert len({round(out.logs[f"loss_head{c}"].item(), 6) for c in range(3)}) == 3


def test_loss_is_the_amcl_loss_of_the_projections_and_logs() -> None:
    head = small_head(reg_weight=0.3, tau_min=0.05, tau_max=1.0, tau_init=0.2)
    feats = [torch.randn(5, 12), torch.randn(5, 12)]
    out = head(Views(feats), batch_info(5))
    z_a = [g(feats[0]) for g in head.projectors]
    z_b = [g(feats[1]) for g in head.projectors]
    expected, logs = AMCLLoss(0.3)(z_a, z_b, head.temperatures)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(out.logs) == {"loss_head0", "loss_head1", "loss_head2", "reg", "tau_mean", "tau_min", "tau_max", "z_std"}
    assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values())
    assert 0.05 <= out.logs["tau_min"] <= out.logs["tau_mean"] <= out.logs["tau_max"] <= 1.0
    # tau_init sets the starting temperatures (the MLP output weights are small at init).
    assert out.logs["tau_mean"].item() == pytest.approx(0.2, abs=0.05)
    assert out.logs["tau_min"] == logs["tau_min"]


def test_three_views_average_pairs() -> None:
    head = small_head()
    feats = [torch.randn(4, 12) for _ in range(3)]
    out = head(Views(feats), batch_info(4))
    z = [[g(f) for g in head.projectors] for f in feats]
    pair_losses = [head.loss(z[i], z[j], head.temperatures)[0] for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert out.loss.item() == pytest.approx(torch.stack(pair_losses).mean().item(), rel=1e-6)


def test_embed_concatenates_heads() -> None:
    head = small_head()
    x = torch.randn(4, 12)
    e = head.embed(x)
    assert e.shape == (4, 3 * 8)
    torch.testing.assert_close(e[:, 8:16], head.projectors[1](x))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        AMCLHead(in_dim=4, num_heads=0)
    with pytest.raises(ValueError, match="at least 2 views"):
        small_head()(Views([torch.randn(4, 12)]), batch_info(4))
