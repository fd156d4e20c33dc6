"""Exponential moving average (momentum) encoders: the update and its cosine momentum schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_momentum(base: float, final: float, step: int, total_steps: int) -> float:
    """BYOL's schedule (Grill et al., 2020, Sec. 3.2), used by solo-learn's MoCo V2+:
    m(k) = final - (final - base) * (cos(pi k / K) + 1) / 2, so m(0) = base and m(K) = final.
    ``total_steps <= 0`` (unknown length) keeps ``base``."""
    if total_steps <= 0:
        return base
    k = min(max(step, 0), total_steps)
    return final - (final - base) * (math.cos(math.pi * k / total_steps) + 1) / 2


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s for every parameter (MoCo Eq. 2, He et al., 2020).

    Buffers (BatchNorm running statistics) are not averaged: the teacher keeps its own, as in the
    MoCo reference code. Parameters are matched by order; both modules must share one architecture.
    """
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)
