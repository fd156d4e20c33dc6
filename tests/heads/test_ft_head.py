"""MoCo v2 + Feature Transformation head: switches off = MoCo v2 exactly, original keys enqueued,
draws from the head's own generator (checkpointed), registered as ``mocov2_ft``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.heads import HEADS, BatchInfo, MoCoV2FTHead, MoCoV2Head, Views
from ssl_toolkit.losses.feature_transform import FeatureTransformLoss

KW = {"in_dim": 12, "hidden_dim": 16, "out_dim": 8, "queue_size": 20}


def batch_info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


def inputs(seed: int, b: int = 6) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 12, generator=g) for _ in range(2)], [torch.randn(b, 12, generator=g) for _ in range(2)]


@pytest.mark.parametrize("symmetric", [True, False])
def test_both_switches_off_is_moco_v2_exactly(symmetric: bool) -> None:
    torch.manual_seed(0)
    moco = MoCoV2Head(**KW, symmetric=symmetric)
    ft = MoCoV2FTHead(**KW, symmetric=symmetric, positive_extrapolation=False, negative_interpolation=False)
    ft.load_state_dict({**moco.state_dict(), "_extra_state": ft.get_extra_state()})
    moco.queue_index[:2] = ft.queue_index[:2] = torch.tensor([1, 4])  # own-key exclusion active in both
    for step in range(2):  # the second step reads the queue the first one wrote
        feats, teacher = inputs(step)
        a, b = [f.clone().requires_grad_(True) for f in feats], [f.clone().requires_grad_(True) for f in feats]
        out_m, out_f = moco(Views(a, teacher=teacher), batch_info(6)), ft(Views(b, teacher=teacher), batch_info(6))
        out_m.loss.backward()
        out_f.loss.backward()
        assert torch.equal(out_m.loss, out_f.loss)
        assert all(torch.equal(x.grad, y.grad) for x, y in zip(a, b))
        assert torch.equal(moco.queue, ft.queue) and torch.equal(moco.queue_index, ft.queue_index)
        assert float(out_f.logs["ft_lambda"]) == 1.0 and float(out_f.logs["ft_mu"]) == 1.0


def test_transforms_on_change_the_loss_but_enqueue_the_original_keys() -> None:
    torch.manual_seed(1)
    head = MoCoV2FTHead(**KW, symmetric=True, seed=5)
    feats, teacher = inputs(2)
    queue_before = head.queue.clone()
    out = head(Views(feats, teacher=teacher), batch_info(6))
    k1, k2 = head.momentum_projector(teacher[0]), head.momentum_projector(teacher[1])
    # The untransformed, unit-norm keys of both views sit in the first 12 slots.
    torch.testing.assert_close(head.queue[:12], F.normalize(torch.cat([k1, k2]), dim=1), rtol=0, atol=0)
    torch.testing.assert_close(head.queue[12:], queue_before[12:])
    # The loss is the transformed one with the head's draws (replayed from the same seed) ...
    replay = MoCoV2FTHead(**KW, symmetric=True, seed=5)
    q1, q2 = head.projector(feats[0]), head.projector(feats[1])
    exclude = torch.zeros(6, 20, dtype=torch.bool)
    loss_fn = FeatureTransformLoss(0.2)
    parts = []
    for q, k in ((q1, k2), (q2, k1)):
        lam = 1.0 + replay.draw_beta(2.0)
        mu, perm = replay.draw_beta(1.6), replay.draw_permutation(20, torch.device("cpu"))
        assert 1.0 <= lam <= 2.0 and 0.0 <= mu <= 1.0 and sorted(perm.tolist()) == list(range(20))
        parts.append(loss_fn(q, k, queue_before, lam=lam, mu=mu, perm=perm, exclude=exclude)[0])
    torch.testing.assert_close(out.loss, (parts[0] + parts[1]) / 2)
    # ... which is not MoCo v2's.
    plain = (loss_fn(q1, k2, queue_before)[0] + loss_fn(q2, k1, queue_before)[0]) / 2
    assert not torch.isclose(out.loss, plain)
    assert 1.0 < float(out.logs["ft_lambda"]) < 2.0 and 0.0 < float(out.logs["ft_mu"]) < 1.0


@pytest.mark.parametrize("pos, neg", [(True, False), (False, True)])
def test_each_switch_works_alone(pos: bool, neg: bool) -> None:
    torch.manual_seed(2)
    head = MoCoV2FTHead(**KW, positive_extrapolation=pos, negative_interpolation=neg)
    out = head(Views(*inputs(3)), batch_info(6))
    assert (float(out.logs["ft_lambda"]) > 1.0) == pos and (float(out.logs["ft_mu"]) < 1.0) == neg


def test_draws_use_the_heads_generator_and_survive_a_checkpoint() -> None:
    head = MoCoV2FTHead(**KW, seed=3)
    rng = torch.get_rng_state()
    head(Views(*inputs(4)), batch_info(6))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG was not touched
    saved = head.state_dict()
    assert "_extra_state" in saved
    expected = [head.draw_beta(2.0), head.draw_permutation(20, torch.device("cpu")).tolist()]
    resumed = MoCoV2FTHead(**KW, seed=99)
    resumed.load_state_dict(saved)
    assert [resumed.draw_beta(2.0), resumed.draw_permutation(20, torch.device("cpu")).tolist()] == expected


def test_registered_and_validates() -> None:
    assert HEADS["mocov2_ft"] is MoCoV2FTHead
    with pytest.raises(ValueError, match="pos_alpha"):
        MoCoV2FTHead(**KW, pos_alpha=0.0)
    with pytest.raises(ValueError, match="views.teacher"):
        MoCoV2FTHead(**KW)(Views(inputs(5)[0]), batch_info(6))
