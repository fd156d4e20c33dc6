"""DINO head: the loss on student (all crops) and teacher (global crops) logits against lightly
1.6's DINOLoss, the teacher receiving only the global crops in SSLModule, the weight-normalized
last layer (norm fixed, frozen for the first epochs), the EMA teacher projection."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss

from conftest import TINY_BACKBONE
from ssl_toolkit.augment import MultiCropAugment
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.ema import cosine_momentum
from ssl_toolkit.heads import BatchInfo, DINOHead, Views
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import SGDFactory

KW = {"hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 20}


def info(b: int, epoch: int = 0) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=epoch)


def test_head_loss_equals_lightly_on_the_projections_for_two_steps() -> None:
    torch.manual_seed(0)
    head = DINOHead(in_dim=12, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=3, **KW)
    theirs = LightlyDINOLoss(20, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    for epoch in (1, 2):  # warm-up temperatures; the second step uses the moved centre
        feats = [torch.randn(6, 12) for _ in range(5)]  # 2 global + 3 local crops
        teacher_feats = [torch.randn(6, 12) for _ in range(2)]
        out = head(Views(feats, teacher=teacher_feats), info(6, epoch))
        with torch.no_grad():
            student = [head.projection(f) for f in feats]
            teacher = [head.teacher_projection(f) for f in teacher_feats]
        torch.testing.assert_close(out.loss.detach(), theirs(teacher, student, epoch=epoch), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head.loss.center, theirs.center.view(1, -1))
        assert float(out.logs["teacher_temp"]) == pytest.approx(0.04 + 0.03 * epoch / 2)


def test_last_layer_is_weight_normalized_with_fixed_norm_and_frozen_for_the_first_epoch() -> None:
    torch.manual_seed(1)
    head = DINOHead(in_dim=12, freeze_last_layer_epochs=1, **KW)
    last = head.projection.last_layer
    torch.testing.assert_close(last.weight.norm(dim=1), torch.ones(20))  # unit prototypes, g = 1
    assert not last.parametrizations.weight.original0.requires_grad
    assert last.parametrizations.weight.original1.requires_grad
    for epoch, frozen in ((0, True), (1, False)):
        head.zero_grad(set_to_none=True)
        feats = [torch.randn(4, 12) for _ in range(3)]
        head(Views(feats, teacher=feats[:2]), info(4, epoch)).loss.backward()
        head.after_backward(step=0)
        direction = last.parametrizations.weight.original1
        assert (direction.grad is None) == frozen, epoch
        assert head.projection.mlp[0].weight.grad is not None  # the MLP always learns


def test_teacher_projection_is_an_ema_of_the_student_on_the_cosine_schedule() -> None:
    torch.manual_seed(2)
    head = DINOHead(in_dim=12, base_momentum=0.9, final_momentum=1.0, **KW)
    teacher0 = [p.clone() for p in head.teacher_projection.parameters()]
    with torch.no_grad():
        for p in head.projection.parameters():
            p.add_(torch.randn_like(p))
    m = cosine_momentum(0.9, 1.0, 3, 10)
    head.after_step(3, 10)
    for t0, t, s in zip(teacher0, head.teacher_projection.parameters(), head.projection.parameters(), strict=True):
        torch.testing.assert_close(t, m * t0 + (1 - m) * s)
    assert head.teacher_momentum(10, 10) == 1.0
    assert not any(p.requires_grad for p in head.teacher_projection.parameters())


def test_in_ssl_module_the_teacher_sees_only_the_global_crops() -> None:
    torch.manual_seed(3)
    backbone = build_backbone(TINY_BACKBONE)[0]
    head = DINOHead(in_dim=backbone.num_features, **KW)
    augment = MultiCropAugment(size=32, num_global=2, local_size=16, num_local=3, blur_p=0.0)
    module = SSLModule(backbone, head, augment, SGDFactory(lr=0.1))
    rows = {}
    head.teacher_projection.register_forward_hook(lambda m, a, o: rows.__setitem__("teacher", a[0].shape[0]))
    head.projection.register_forward_hook(lambda m, a, o: rows.__setitem__("student", a[0].shape[0]))
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    out, feats = module.step_loss(module.augment(images), torch.zeros(4), torch.arange(4), step=0, epoch=0)
    assert len(feats) == 5 and rows == {"teacher": 2 * 4, "student": 5 * 4}
    out.loss.backward()
    assert torch.isfinite(out.loss) and any(p.grad is not None for p in module.backbone.parameters())


@pytest.mark.parametrize(
    "bad", [{"base_momentum": 1.5}, {"freeze_last_layer_epochs": -1}, {"bottleneck_dim": 0}, {"student_temp": 0.0}]
)
def test_bad_arguments_name_the_keyword(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        DINOHead(in_dim=12, **bad)


def test_missing_teacher_features_are_refused() -> None:
    with pytest.raises(ValueError, match="momentum backbone"):
        DINOHead(in_dim=12, **KW)(Views([torch.randn(4, 12)] * 2), info(4))
