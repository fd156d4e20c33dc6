"""RandomOrderColorJitter: torchvision semantics, per-sample factors and per-sample op order."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ssl_toolkit.augment.color import JitterParams, RandomOrderColorJitter, apply_color_jitter

# Strong enough that clipping and the hue/contrast interplay make the order visible.
FACTORS = torch.tensor([1.6, 0.5, 1.7, 0.15])


@pytest.fixture
def rgb() -> Tensor:
    """One colourful float image (3, 16, 16) in [0, 1]."""
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))


def torchvision_jitter(image: Tensor, factors: Tensor, order: list[int]) -> Tensor:
    """Reference: torchvision's float kernels applied one at a time in ``order``."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op_index in order:
        image = ops[op_index](image, float(factors[op_index]))
    return image


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_each_order_matches_torchvision(rgb: Tensor, order: tuple[int, ...]) -> None:
    out = apply_color_jitter(rgb[None], FACTORS[None], torch.tensor([order]))
    torch.testing.assert_close(out[0], torchvision_jitter(rgb, FACTORS, list(order)), atol=1e-4, rtol=1e-4)


def test_orders_differ_per_sample_in_one_call(rgb: Tensor) -> None:
    batch = 48
    jitter = RandomOrderColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)
    drawn = jitter.sample_params(batch)
    assert all(sorted(row) == [0, 1, 2, 3] for row in drawn.order.tolist())
    assert len({tuple(row) for row in drawn.order.tolist()}) > 5  # 24 orders possible; 1 if shared
    # Same image and same factors for everyone, so only the order can make outputs differ.
    params = JitterParams(FACTORS.expand(batch, 4).clone(), drawn.order, torch.ones(batch, dtype=torch.bool))
    out = jitter(rgb.expand(batch, -1, -1, -1), params)
    for i in range(batch):
        expected = torchvision_jitter(rgb, FACTORS, drawn.order[i].tolist())
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=1e-4)
    distinct = {tuple(row) for row in out.flatten(1).mul(1e3).round().int().tolist()}
    assert len(distinct) > 1


def test_factors_drawn_per_sample_in_torchvision_ranges() -> None:
    params = RandomOrderColorJitter(1.5, 0.4, 0.0, 0.1).sample_params(4096)
    low, high = params.factors.amin(0), params.factors.amax(0)
    assert 0.0 <= low[0] < 0.05 and 2.45 < high[0] <= 2.5  # brightness: [max(0, 1 - 1.5), 2.5]
    assert 0.6 <= low[1] < 0.62 and 1.38 < high[1] <= 1.4
    assert torch.all(params.factors[:, 2] == 1.0)  # strength 0 -> neutral, never applied
    assert -0.1 <= low[3] < -0.09 and 0.09 < high[3] <= 0.1


def test_probability_gates_samples(rgb: Tensor) -> None:
    batch = 64
    images = rgb.expand(batch, -1, -1, -1)
    jitter = RandomOrderColorJitter(0.8, 0.8, 0.8, 0.2, p=0.5)
    params = jitter.sample_params(batch, torch.Generator().manual_seed(0))
    assert 0 < int(params.applied.sum()) < batch
    out = jitter(images, params)
    untouched = (out == images).flatten(1).all(1)
    assert torch.equal(untouched, ~params.applied)
    assert torch.equal(RandomOrderColorJitter(0.8, 0.8, 0.8, 0.2, p=0.0)(images), images)


def test_zero_strength_is_identity(rgb: Tensor) -> None:
    images = rgb.expand(4, -1, -1, -1)
    assert torch.equal(RandomOrderColorJitter(0.0, 0.0, 0.0, 0.0)(images), images)


def test_reproducible_under_seed(rgb: Tensor) -> None:
    images = rgb.expand(8, -1, -1, -1)
    jitter = RandomOrderColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)
    first = jitter(images, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # the global seed plays no part
    assert torch.equal(jitter(images, generator=torch.Generator().manual_seed(1)), first)
    assert not torch.equal(jitter(images, generator=torch.Generator().manual_seed(3)), first)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"brightness": -0.1}, "brightness"),
        ({"contrast": -1.0}, "contrast"),
        ({"saturation": -0.5}, "saturation"),
        ({"hue": 0.6}, "hue"),
        ({"hue": -0.1}, "hue"),
        ({"p": 1.5}, "p"),
    ],
)
def test_bad_args_raise(kwargs: dict[str, float], name: str) -> None:
    args = {"brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2, "p": 0.8} | kwargs
    with pytest.raises(ValueError, match=rf"^{name} must"):
        RandomOrderColorJitter(**args)
