"""The augmentation's draws, made by the toolkit from its own generators, keep the distributions of
the samplers they replace: torchvision's ``RandomResizedCrop.get_params`` for the crop boxes, and
U(low, high) / Bernoulli(p) / uniform permutations for the per-view ops. Kolmogorov-Smirnov
distances are checked at alpha = 0.001 (c(alpha) = 1.95), proportions within 4.5 standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.augment.crop import draw_crop_boxes

N = 4000
KS_C = 1.95  # two-sided Kolmogorov-Smirnov critical value at alpha = 0.001


def ks_uniform(samples: torch.Tensor, low: float, high: float) -> float:
    """One-sample KS distance of ``samples`` from U(low, high)."""
    x = ((samples.double().sort().values - low) / (high - low)).clamp(0, 1)
    n = x.numel()
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - x
    lower = x - torch.arange(0, n, dtype=torch.float64) / n
    return float(torch.maximum(upper, lower).max())


def ks_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample KS distance (the largest gap between the empirical CDFs)."""
    grid = torch.cat([a, b]).double().sort().values
    cdf_a = torch.searchsorted(a.double().sort().values, grid, right=True) / a.numel()
    cdf_b = torch.searchsorted(b.double().sort().values, grid, right=True) / b.numel()
    return float((cdf_a - cdf_b).abs().max())


def assert_proportion(coins: torch.Tensor, p: float) -> None:
    se = math.sqrt(p * (1 - p) / coins.numel())
    assert abs(float(coins.float().mean()) - p) <= 4.5 * se + 1e-12, (float(coins.float().mean()), p)


def test_the_ks_helpers_tell_distributions_apart() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(N, generator=g)
    assert ks_uniform(u, 0, 1) < KS_C / math.sqrt(N) < ks_uniform(u**1.2, 0, 1)
    assert ks_two_sample(u, torch.rand(N, generator=g)) < KS_C * math.sqrt(2 / N) < ks_two_sample(u, u**1.2)


@pytest.mark.parametrize(("height", "width", "scale", "ratio"), [
    (40, 48, (0.08, 1.0), (3 / 4, 4 / 3)),
    (64, 64, (0.05, 0.14), (3 / 4, 4 / 3)),
    (20, 90, (0.5, 1.0), (0.5, 2.0)),  # wide image: many attempts fail, the fallback is drawn
])  # fmt: skip
def test_crop_boxes_follow_torchvisions_get_params(height: int, width: int, scale: tuple, ratio: tuple) -> None:
    sizes = torch.tensor([[height, width]]).expand(N, 2)
    ours = draw_crop_boxes(sizes, scale, ratio, torch.Generator().manual_seed(1)).double()
    torch.manual_seed(2)
    image = torch.empty(1, height, width)
    ref = torch.tensor([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(N)]).double()
    ref = ref[:, [1, 0, 3, 2]]  # (top, left, h, w) -> (left, top, w, h)
    bound = KS_C * math.sqrt(2 / N)
    for name, of in {
        "area": lambda b: b[:, 2] * b[:, 3] / (height * width),
        "aspect": lambda b: b[:, 2] / b[:, 3],
        "left": lambda b: b[:, 0] / (width - b[:, 2] + 1),
        "top": lambda b: b[:, 1] / (height - b[:, 3] + 1),
    }.items():
        assert ks_two_sample(of(ours), of(ref)) < bound, name


def test_per_view_draws_have_the_configured_distributions() -> None:
    aug = SimCLRAugment(32, flip_p=0.3, brightness=0.4, contrast=0.6, saturation=0.2, hue=0.1, jitter_p=0.8,
                        grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0), solarize_p=0.1)  # fmt: skip
    params = aug.pipeline.sample_params(N, torch.Generator().manual_seed(3), torch.device("cpu"))
    for coins, p in ((params.flip, 0.3), (params.jitter.applied, 0.8), (params.gray, 0.2), (params.blur, 0.5),
                     (params.solarize, 0.1)):  # fmt: skip
        assert coins is not None
        assert_proportion(coins, p)
    assert params.sigma is not None
    assert ks_uniform(params.sigma, 0.1, 2.0) < KS_C / math.sqrt(N)
    for column, (low, high) in enumerate(((0.6, 1.4), (0.4, 1.6), (0.8, 1.2), (-0.1, 0.1))):
        assert ks_uniform(params.jitter.factors[:, column], low, high) < KS_C / math.sqrt(N), column
    # 24 orders, each with probability 1/24: chi-square with 23 degrees of freedom, 0.001 quantile 49.7.
    codes = (params.jitter.order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1].double()
    assert counts.numel() == 24 and float(((counts - N / 24) ** 2 / (N / 24)).sum()) < 49.7


def test_a_probability_of_zero_draws_nothing_and_skips_the_op() -> None:
    aug = SimCLRAugment(32, flip_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    params = aug.pipeline.sample_params(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert params.flip is None and params.gray is None and params.blur is None and params.solarize is None
