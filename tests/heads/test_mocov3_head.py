"""MoCo v3 head: the loss is the authors' ctr(q1, k2) + ctr(q2, k1) on their MLPs, the momentum
schedule, and one fit step moving both key-encoder halves by the momentum."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from conftest import TINY_BACKBONE
from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.heads import BatchInfo, MoCoV3Head, Views
from ssl_toolkit.losses import MoCoV3Loss
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import SGDFactory


def authors_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """facebookresearch/moco-v3 ``moco/builder.py`` ``MoCo._build_mlp``, transcribed."""
    mlp: list[nn.Module] = []
    for layer in range(num_layers):
        dim1 = input_dim if layer == 0 else mlp_dim
        dim2 = output_dim if layer == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if layer < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def info(b: int) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=0)


@pytest.mark.parametrize("vit", [False, True])
def test_mlps_are_the_authors_and_the_loss_is_their_symmetric_ctr(vit: bool) -> None:
    torch.manual_seed(0)
    b, f, hidden, dim, t = 8, 12, 16, 8, 0.2
    kwargs = {"num_layers": 3, "predictor_last_norm": "bn_noaffine"} if vit else {}
    head = MoCoV3Head(in_dim=f, hidden_dim=hidden, out_dim=dim, pred_hidden_dim=hidden, temperature=t, **kwargs)
    # MoCo_ResNet: projector _build_mlp(2, ...), predictor _build_mlp(2, ..., False); MoCo_ViT: 3 and 2 (last BN).
    projector = authors_mlp(3 if vit else 2, f, hidden, dim)
    predictor = authors_mlp(2, dim, hidden, dim, last_bn=vit)
    projector.load_state_dict(head.projector.state_dict(), strict=True)  # same layers, same names
    predictor.load_state_dict(head.predictor.state_dict(), strict=True)
    feats = [torch.randn(b, f) for _ in range(2)]
    teacher = [torch.randn(b, f) for _ in range(2)]
    out = head(Views(feats, teacher=teacher), info(b))
    # Both views go through the MLPs in one call (BatchNorm statistics over both views, as the
    # backbone's: docs/methods/mocov3.md); the authors call them once per view.
    q1, q2 = predictor(projector(torch.cat(feats))).chunk(2)
    with torch.no_grad():
        k1, k2 = projector(torch.cat(teacher)).chunk(2)  # the momentum projector starts as a copy
    ctr = MoCoV3Loss(t)
    torch.testing.assert_close(out.loss, ctr(q1, k2) + ctr(q2, k1))


def test_three_views_sum_over_each_global_key_and_every_other_query() -> None:
    torch.manual_seed(1)
    head = MoCoV3Head(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=8, batch_norm=False, last_norm="none")
    feats = [torch.randn(5, 6) for _ in range(3)]  # 2 global + 1 local view
    teacher = [torch.randn(5, 6) for _ in range(2)]
    q = [head.predictor(head.projector(x)) for x in feats]
    k = [head.momentum_projector(x) for x in teacher]
    expected = sum(head.loss(q[j], k[i]) for i in range(2) for j in range(3) if j != i)
    torch.testing.assert_close(head(Views(feats, teacher=teacher), info(5)).loss, expected)


def test_keys_carry_no_gradient_and_bad_arguments() -> None:
    head = MoCoV3Head(in_dim=6, hidden_dim=8, out_dim=4, pred_hidden_dim=8)
    teacher = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    head(Views([torch.randn(4, 6) for _ in range(2)], teacher=teacher), info(4)).loss.backward()
    assert all(t.grad is None for t in teacher)
    assert not any(p.requires_grad for p in head.momentum_projector.parameters())
    assert head.teacher_momentum(0, 100) == pytest.approx(0.99)
    assert head.teacher_momentum(50, 100) == pytest.approx(0.995)
    assert head.teacher_momentum(100, 100) == pytest.approx(1.0)
    for bad, match in [({"temperature": 0.0}, "temperature"), ({"base_momentum": 1.5}, "base_momentum"),
                       ({"last_norm": "bad"}, "last_norm"), ({"pred_hidden_dim": 0}, "hidden_dim")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            MoCoV3Head(in_dim=6, **bad)
    with pytest.raises(ValueError, match="views.teacher"):
        head(Views([torch.randn(4, 6) for _ in range(2)]), info(4))


def test_one_fit_step_moves_both_key_encoder_halves_by_the_momentum(tmp_path) -> None:
    m = 0.75
    torch.manual_seed(0)
    backbone = build_backbone(TINY_BACKBONE)[0]
    head = MoCoV3Head(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, pred_hidden_dim=32,
                      base_momentum=m, final_momentum=m)  # fmt: skip
    module = SSLModule(backbone, head, SimCLRAugment(size=32), SGDFactory(lr=0.5, weight_decay=0.0, momentum=0.0))
    start = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(max_steps=1, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=SyntheticData(num_samples=32, num_val_samples=8, batch_size=16))
    state, checked, moved = module.state_dict(), 0, 0
    for teacher_prefix, student_prefix in [("teacher.", "backbone."), ("head.momentum_projector.", "head.projector.")]:
        for name, param in module.named_parameters():
            if name.startswith(student_prefix):
                t_name = teacher_prefix + name[len(student_prefix) :]
                torch.testing.assert_close(start[t_name], start[name])  # started as a copy
                torch.testing.assert_close(state[t_name], m * start[name] + (1 - m) * param.detach())
                moved += not torch.equal(param.detach(), start[name])
                checked += 1
    assert checked > 10 and moved > checked // 2  # the student stepped, the teacher followed by 1 - m
