from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_toolkit.optim import AdamWFactory, LARSFactory, SGDFactory, WarmupCosine, param_groups


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def test_param_groups_exclude_bias_and_norm() -> None:
    model = small_model()
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2}
    assert {p.ndim for p in no_decay["params"]} == {1}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_without_exclusion_every_parameter_decays_and_is_lars_adapted() -> None:
    # apex LARC over model.parameters() (official SwAV): the bias too moves by lr * ratio * (g + wd * b).
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    (group,) = param_groups(model, 1e-2, exclude_bias_n_norm=False)
    assert group["weight_decay"] == 1e-2 and group["lars_adapt"] and len(group["params"]) == 2
    b0 = model.bias.detach().clone()
    factory = LARSFactory(
        lr=0.5, weight_decay=1e-2, trust_coefficient=0.001, trust_clip=False, exclude_bias_n_norm=False
    )
    opt = factory.build([group], global_batch_size=256)
    model(torch.randn(5, 4)).pow(2).sum().backward()
    gb = model.bias.grad.clone()
    opt.step()
    ratio = 0.001 * b0.norm() / (gb.norm() + 1e-2 * b0.norm() + 1e-8)
    torch.testing.assert_close(model.bias.detach(), b0 - 0.5 * ratio * (gb + 1e-2 * b0))
    sgd = SGDFactory(lr=0.1, weight_decay=1e-4, exclude_bias_n_norm=False)
    assert sgd.exclude_bias_n_norm is False and SGDFactory().exclude_bias_n_norm is True


def test_lr_scaled_per_256() -> None:
    opt = SGDFactory(lr=0.1).build(param_groups(small_model(), 0.0), global_batch_size=512)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    opt = AdamWFactory(lr=1e-3).build(param_groups(small_model(), 0.05), global_batch_size=128)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0


def test_lars_adapts_weights_but_not_biases() -> None:
    # One step from zero momentum: a no-decay parameter moves by exactly lr * grad (plain SGD),
    # a weight by lr * trust_ratio * (grad + wd * w) with trust_ratio from the LARS formula.
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    factory = LARSFactory(lr=0.5, weight_decay=1e-2, momentum=0.9, trust_coefficient=0.02, trust_clip=False)
    opt = factory.build(param_groups(model, factory.weight_decay), global_batch_size=256)
    model(torch.randn(5, 4)).pow(2).sum().backward()
    gw, gb = model.weight.grad.clone(), model.bias.grad.clone()
    opt.step()
    torch.testing.assert_close(model.bias.detach(), b0 - 0.5 * gb)
    ratio = 0.02 * w0.norm() / (gw.norm() + 1e-2 * w0.norm() + 1e-8)
    torch.testing.assert_close(model.weight.detach(), w0 - 0.5 * ratio * (gw + 1e-2 * w0))


def test_bad_values_name_the_argument() -> None:
    with pytest.raises(ValueError, match="lr"):
        LARSFactory(lr=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        SGDFactory(weight_decay=-1.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupCosine(warmup_epochs=-1)


def test_warmup_cosine_shape() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(warmup_epochs=2, start_factor=0.1, min_factor=0.01).build(
        opt, total_steps=30, steps_per_epoch=5
    )
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)  # start
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 5 / 10)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0)  # peak
    assert lrs[20] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert lrs[29] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up
    state = sched.state_dict()
    assert "lr_lambdas" in state and state["lr_lambdas"][0]["warmup"] == 10  # checkpointable


def test_lars_at_weight_decay_zero_still_adapts_weights_but_not_biases_or_norms() -> None:
    # timm's Lars adapts only groups with weight_decay != 0; at wd 0 it was plain SGD (lr 0.300).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    (model(torch.randn(2, 3, 6, 6)) * torch.randn(2, 3)).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    lr, eta = 0.3, 0.02
    opt = LARSFactory(lr=lr, weight_decay=0.0, momentum=0.9, trust_coefficient=eta, trust_clip=True).build(
        param_groups(model, 0.0), global_batch_size=256
    )
    opt.step()
    effective = {}
    for name, p in model.named_parameters():  # first step from zero momentum: the step is lr_eff * grad
        effective[name] = ((start[name] - p.detach()).norm() / grads[name].norm()).item()
        if p.ndim > 1:  # conv and linear weights: lr * min(eta |w| / (|g| lr), 1) (LARS + LARC clip)
            expected = min(eta * start[name].norm().item() / grads[name].norm().item(), lr)
        else:  # BatchNorm weight/bias and the linear bias: excluded, plain lr
            expected = lr
        assert effective[name] == pytest.approx(expected, rel=1e-5), name
    assert effective["0.weight"] < 0.5 * lr  # the adaptation matters for the conv layer
    assert set(effective) == {"0.weight", "1.weight", "1.bias", "3.weight", "3.bias"}
