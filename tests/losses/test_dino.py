"""DINOLoss against lightly 1.6's DINOLoss (value, gradient, centre, temperature warm-up), a plain
computation of Eq. 3-4 and an analytic value. The 1 vs 2 process check is in tests/test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss

from ssl_toolkit.losses import DINOLoss


def views(num: int, n: int, k: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, k, generator=g) for _ in range(num)]


@pytest.mark.parametrize(
    ("n", "k", "num_teacher", "num_student", "temps"),
    [(4, 8, 2, 2, (0.04, 0.1)), (6, 16, 2, 6, (0.07, 0.1)), (3, 5, 1, 3, (0.5, 0.2))],
)
def test_equals_lightly_value_gradient_and_centre(n, k, num_teacher, num_student, temps) -> None:
    teacher_temp, student_temp = temps
    ours_loss = DINOLoss(k, teacher_temp=teacher_temp, warmup_teacher_temp=teacher_temp, student_temp=student_temp)
    theirs_loss = LightlyDINOLoss(k, warmup_teacher_temp=teacher_temp, teacher_temp=teacher_temp,
                                  warmup_teacher_temp_epochs=1, student_temp=student_temp)  # fmt: skip
    for step in range(3):  # the second and third steps use the moved centre
        teacher = views(num_teacher, n, k, seed=10 + step)
        student = [v.requires_grad_(True) for v in views(num_student, n, k, seed=20 + step)]
        other = [v.detach().clone().requires_grad_(True) for v in student]
        ours = ours_loss(student, teacher, epoch=5)
        theirs = theirs_loss(teacher, other, teacher_temp=teacher_temp)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        ours.backward(), theirs.backward()
        for mine, ref in zip(student, other, strict=True):
            torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(ours_loss.center, theirs_loss.center.view(1, k))
    assert ours_loss.center.abs().sum() > 0


def test_teacher_temperature_warm_up_equals_lightly() -> None:
    ours = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30)
    theirs = LightlyDINOLoss(8, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    for epoch in (0, 1, 15, 29, 30, 100):
        expected = float(theirs.teacher_temp_schedule[epoch]) if epoch < 30 else theirs.teacher_temp
        assert math.isclose(ours.teacher_temperature(epoch), expected, rel_tol=1e-6), epoch
    assert ours.teacher_temperature(0) == 0.04 and ours.teacher_temperature(29) == pytest.approx(0.07)


def plain_dino(student, teacher, center, t_temp, s_temp) -> torch.Tensor:
    """Eq. 3 written as the authors' loop: skip v == i, cross-entropy per row, mean over rows, mean over pairs."""
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        q = torch.softmax((t - center) / t_temp, dim=-1)
        for v, s in enumerate(student):
            if v == i:
                continue
            rows = [-(q[b] * torch.log_softmax(s[b] / s_temp, dim=-1)).sum() for b in range(s.shape[0])]
            total, terms = total + sum(rows) / len(rows), terms + 1
    return total / terms


def test_equals_the_plain_formula_and_the_centre_update() -> None:
    k, n = 6, 5
    loss = DINOLoss(k, teacher_temp=0.05, student_temp=0.1, center_momentum=0.8)
    loss.center.copy_(torch.linspace(-1, 1, k).unsqueeze(0))
    center0 = loss.center.clone()
    teacher = [t.double() for t in views(2, n, k, seed=1)]
    student = [s.double().requires_grad_(True) for s in views(4, n, k, seed=2)]
    ours = loss(student, teacher, epoch=0)
    plain = plain_dino(student, teacher, center0.double(), 0.05, 0.1)
    torch.testing.assert_close(ours.double(), plain, rtol=1e-5, atol=1e-6)
    for mine, other in zip(torch.autograd.grad(ours, student), torch.autograd.grad(plain, student), strict=True):
        torch.testing.assert_close(mine.double(), other, rtol=1e-4, atol=1e-7)
    batch_center = torch.cat(teacher).mean(dim=0, keepdim=True).float()
    torch.testing.assert_close(loss.center, 0.8 * center0 + 0.2 * batch_center)


def test_analytic_value_with_a_uniform_teacher() -> None:
    """A constant teacher gives the uniform target, and a constant student the uniform prediction:
    the cross-entropy is ln K for every pair."""
    k = 10
    loss = DINOLoss(k)(views_const(3, 4, k), views_const(2, 4, k), epoch=0)
    torch.testing.assert_close(loss, torch.tensor(math.log(k)))


def views_const(num: int, n: int, k: int) -> list[torch.Tensor]:
    return [torch.full((n, k), 0.3) for _ in range(num)]


@pytest.mark.parametrize(
    "bad", [{"out_dim": 0}, {"teacher_temp": 0.0}, {"student_temp": -0.1}, {"center_momentum": 1.5},
            {"warmup_teacher_temp_epochs": -1}],
)  # fmt: skip
def test_bad_arguments_name_the_keyword(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        DINOLoss(**{"out_dim": 4, **bad})
