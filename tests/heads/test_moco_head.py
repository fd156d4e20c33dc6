"""MoCo v2 / MoCHi head: the loss against plain MoCo, the queue (wrap-around, own-key exclusion,
checkpoints), the momentum schedule and the EMA update of both key-encoder halves in a real fit."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_BACKBONE
from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.ema import cosine_momentum
from ssl_toolkit.heads import BatchInfo, MoCHiHead, MoCoV2Head, Views
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import SGDFactory


def batch_info(b: int, step: int = 0, index: torch.Tensor | None = None) -> BatchInfo:
    index = torch.arange(b) if index is None else index
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=index, step=step, epoch=0)


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo Eq. 1 written out per query: -log exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t))."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    terms = []
    for i in range(q.shape[0]):
        pos = torch.exp(q[i] @ k[i] / t)
        neg = torch.exp(queue @ q[i] / t).sum()
        terms.append(-torch.log(pos / (pos + neg)))
    return torch.stack(terms).mean()


def test_head_loss_is_moco_v2_and_enqueues_the_keys() -> None:
    torch.manual_seed(0)
    b, f, t = 6, 12, 0.2
    head = MoCoV2Head(in_dim=f, hidden_dim=16, out_dim=8, queue_size=20, temperature=t, symmetric=False).double()
    feats = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    teacher = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    queue_before = head.queue.clone()
    out = head(Views(feats, teacher=teacher), batch_info(b))
    q, k = head.projector(feats[0]), head.momentum_projector(teacher[1]).detach()
    torch.testing.assert_close(out.loss, moco_loss(q, k, queue_before, t))
    # The keys went in at the pointer, unit-norm, with their sample indices; the rest is untouched.
    torch.testing.assert_close(head.queue[:b], F.normalize(k, dim=1))
    torch.testing.assert_close(head.queue[b:], queue_before[b:])
    assert head.queue_index[:b].tolist() == list(range(b)) and int(head.queue_ptr) == b


def test_symmetric_loss_averages_both_directions() -> None:
    torch.manual_seed(1)
    b, f, t = 4, 10, 0.5
    head = MoCoV2Head(in_dim=f, hidden_dim=16, out_dim=8, queue_size=32, temperature=t).double()
    feats = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    teacher = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    queue = head.queue.clone()
    out = head(Views(feats, teacher=teacher), batch_info(b))
    q1, q2 = head.projector(feats[0]), head.projector(feats[1])
    k1, k2 = head.momentum_projector(teacher[0]), head.momentum_projector(teacher[1])
    expected = (moco_loss(q1, k2, queue, t) + moco_loss(q2, k1, queue, t)) / 2
    torch.testing.assert_close(out.loss, expected)
    assert int(head.queue_ptr) == 2 * b  # both views' keys enqueued


def test_per_view_queues_score_each_query_against_the_other_views_past_keys() -> None:
    # solo-learn mocov2plus.py: queue (2, D, K); loss(q1, k2, queue[1]) + loss(q2, k1, queue[0]), / 2.
    torch.manual_seed(2)
    b, f, t = 4, 10, 0.2
    head = MoCoV2Head(in_dim=f, hidden_dim=16, out_dim=8, queue_size=12, temperature=t, exclude_own_keys=False,
                      per_view_queues=True).double()  # fmt: skip
    feats = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    teacher = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    view1, view2 = head.queue.clone(), head.queue_view2.clone()
    out = head(Views(feats, teacher=teacher), batch_info(b))
    q1, q2 = head.projector(feats[0]), head.projector(feats[1])
    k1, k2 = head.momentum_projector(teacher[0]), head.momentum_projector(teacher[1])
    expected = (moco_loss(q1, k2, view2, t) + moco_loss(q2, k1, view1, t)) / 2
    torch.testing.assert_close(out.loss, expected)
    # Each view's keys went into its own queue at the same slots; the pointer moved by B, not 2B.
    torch.testing.assert_close(head.queue[:b], F.normalize(k1, dim=1))
    torch.testing.assert_close(head.queue_view2[:b], F.normalize(k2, dim=1))
    torch.testing.assert_close(head.queue_view2[b:], view2[b:])
    assert int(head.queue_ptr) == b and head.queue_index[:b].tolist() == list(range(b))
    with pytest.raises(ValueError, match="^per_view_queues: "):
        MoCoV2Head(in_dim=f, symmetric=False, per_view_queues=True)


def test_queue_pointer_wraps_around() -> None:
    head = MoCoV2Head(in_dim=4, hidden_dim=8, out_dim=3, queue_size=5)
    first, second = torch.randn(3, 3), torch.randn(3, 3)
    head.enqueue([first], torch.tensor([0, 1, 2]))
    head.enqueue([second], torch.tensor([3, 4, 5]))
    # Slots 3, 4 then 0 receive the second batch: [second[2], first[1], first[2], second[0], second[1]].
    expected = torch.stack([second[2], first[1], first[2], second[0], second[1]])
    torch.testing.assert_close(head.queue, F.normalize(expected, dim=1))
    assert head.queue_index.tolist() == [5, 1, 2, 3, 4] and int(head.queue_ptr) == 1


def test_own_older_keys_are_not_negatives() -> None:
    torch.manual_seed(2)
    b, f, t = 3, 6, 0.2
    head = MoCoV2Head(in_dim=f, hidden_dim=8, out_dim=4, queue_size=8, temperature=t, symmetric=False).double()
    head.queue_index[:] = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
    feats = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    teacher = [torch.randn(b, f, dtype=torch.double) for _ in range(2)]
    index = torch.tensor([11, 99, 16])  # samples 11 and 16 have older keys in slots 1 and 6
    queue = head.queue.clone()
    out = head(Views(feats, teacher=teacher), batch_info(b, index=index))
    q, k = head.projector(feats[0]), head.momentum_projector(teacher[1])
    keep = [torch.tensor([0, 2, 3, 4, 5, 6, 7]), torch.arange(8), torch.tensor([0, 1, 2, 3, 4, 5, 7])]
    expected = torch.stack([moco_loss(q[i : i + 1], k[i : i + 1], queue[keep[i]], t) for i in range(b)]).mean()
    torch.testing.assert_close(out.loss, expected)


def test_mixing_waits_for_its_start_step_and_adds_hard_negatives() -> None:
    torch.manual_seed(3)
    head = MoCHiHead(in_dim=8, hidden_dim=16, out_dim=4, queue_size=32, num_hard=8, num_mixed=4,
                     num_query_mixed=4, mix_start_step=2, exclude_own_keys=False)  # fmt: skip
    feats = [torch.randn(4, 8) for _ in range(2)]
    teacher = [torch.randn(4, 8) for _ in range(2)]
    plain = MoCoV2Head(in_dim=8, hidden_dim=16, out_dim=4, queue_size=32, exclude_own_keys=False)
    plain.load_state_dict(head.state_dict())
    early = head(Views(feats, teacher=teacher), batch_info(4, step=1))
    reference = plain(Views(feats, teacher=teacher), batch_info(4, step=1))
    assert float(early.logs["mixing"]) == 0.0 and "hard_mixed_mean_sim" not in early.logs
    torch.testing.assert_close(early.loss, reference.loss)  # before the start step: MoCo v2
    late = head(Views(feats, teacher=teacher), batch_info(4, step=2))
    assert float(late.logs["mixing"]) == 1.0 and "hard_mixed_mean_sim" in late.logs


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0.99, 1.0, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 1.0, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 1.0, 25, 100) == pytest.approx(1.0 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(0.9, 1.0, 7, 0) == 0.9  # unknown length: constant


def _module(momentum: float) -> SSLModule:
    torch.manual_seed(0)
    backbone = build_backbone(TINY_BACKBONE)[0]
    head = MoCHiHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, queue_size=40, num_hard=8,
                     num_mixed=4, num_query_mixed=4, base_momentum=momentum, final_momentum=momentum)  # fmt: skip
    return SSLModule(backbone, head, SimCLRAugment(size=32), SGDFactory(lr=0.5, weight_decay=0.0, momentum=0.0))


def _trainer(tmp_path, steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip


def test_one_fit_step_moves_both_key_encoder_halves_by_the_momentum(tmp_path) -> None:
    m = 0.75
    module = _module(m)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    _trainer(tmp_path, 1).fit(module, datamodule=SyntheticData(num_samples=32, num_val_samples=8, batch_size=16))
    state = module.state_dict()
    pairs = [("teacher.", "backbone."), ("head.momentum_projector.", "head.projector.")]
    checked = 0
    for teacher_prefix, student_prefix in pairs:
        for name, param in module.named_parameters():
            if not name.startswith(student_prefix):
                continue
            t_name = teacher_prefix + name[len(student_prefix) :]
            # Both started as copies of the student; one step: theta_m = m theta_0 + (1 - m) theta_1.
            torch.testing.assert_close(start[t_name], start[name])
            torch.testing.assert_close(state[t_name], m * start[name] + (1 - m) * param.detach())
            checked += 1
    assert checked > 10
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert int(module.head.queue_ptr) == 32  # 2 views x 16 keys


def test_hooks_see_steps_in_order_and_the_run_length(tmp_path) -> None:
    module = _module(0.5)
    calls: list[tuple[str, int, int]] = []
    head = module.head
    head.teacher_momentum = lambda step, total: calls.append(("momentum", step, total)) or 0.5
    head.after_backward = lambda step: calls.append(("backward", step, -1))
    _trainer(tmp_path, 3).fit(module, datamodule=SyntheticData(num_samples=64, num_val_samples=8, batch_size=16))
    backward = [c for c in calls if c[0] == "backward"]
    momentum = [c for c in calls if c[0] == "momentum"]
    assert [c[1] for c in backward] == [0, 1, 2]
    # Once for the teacher backbone, once for the head's projector, per step; total = 3 steps.
    assert [(c[1], c[2]) for c in momentum] == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3), (2, 3)]


def test_queue_and_key_encoder_survive_a_checkpoint(tmp_path) -> None:
    module = _module(0.9)
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, datamodule=SyntheticData(num_samples=64, num_val_samples=8, batch_size=16))
    path = tmp_path / "mochi.ckpt"
    trainer.save_checkpoint(path)
    assert int(module.head.queue_ptr) == 96 % 40  # 3 steps x 32 keys through a 40-slot queue
    restored = _module(0.9)
    assert not torch.equal(restored.head.queue, module.head.queue)
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for name in ("head.queue", "head.queue_index", "head.queue_ptr"):
        torch.testing.assert_close(restored.state_dict()[name], module.state_dict()[name], rtol=0, atol=0)
    for (name, a), b in zip(module.teacher.state_dict().items(), restored.teacher.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
