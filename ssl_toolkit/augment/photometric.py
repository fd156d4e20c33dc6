"""The per-view random ops after the crop: flip, colour jitter, grayscale, blur, solarize.

Every parameter is drawn by the toolkit (no kornia sampler: those draw from torch's global
generator of the device they were moved to) from one generator, on that generator's device, and
every op is applied over the whole batch with ``torch.where`` on the drawn coins: no host sync, no
boolean-mask indexing. The functional kernels are kornia's (blur, grayscale, hue) and
torchvision's formulas (``augment.color``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from kornia.color import rgb_to_grayscale
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

from ssl_toolkit.augment.color import JitterParams, RandomOrderColorJitter
from ssl_toolkit.rng import stream, uniform


class ViewParams(NamedTuple):
    """Per-view draws of :class:`PhotometricOps` for N views, on the views' device. A coin is None
    where its probability is 0 (nothing drawn, the op skipped).

    Attributes:
        flip: (N,) bool, horizontal flip.
        jitter: the colour jitter's draws (``JitterParams``).
        gray: (N,) bool, grayscale.
        blur: (N,) bool, Gaussian blur; ``sigma`` (N,) float its standard deviation in px.
        solarize: (N,) bool, invert the pixels >= 0.5.
    """

    flip: Tensor | None
    jitter: JitterParams
    gray: Tensor | None
    blur: Tensor | None
    sigma: Tensor | None
    solarize: Tensor | None


def _where(coin: Tensor | None, changed: Tensor, views: Tensor) -> Tensor:
    return views if coin is None else torch.where(coin.view(-1, 1, 1, 1), changed, views)


class PhotometricOps(nn.Module):
    """flip -> colour jitter (per-sample order) -> grayscale -> blur -> solarize, on (N, 3, s, s)
    float views in [0, 1], each view with its own draws (SimCLR, Chen et al. 2020, Appendix A; BYOL's
    solarize).

    Args:
        flip_p: horizontal flip probability.
        jitter: the colour jitter (its own ``p``).
        grayscale_p: grayscale probability (kornia's ``rgb_to_grayscale``, 3 equal channels).
        blur_p: Gaussian blur probability.
        blur_sigma: (low, high) px; sigma uniform in it, one per view, both axes.
        blur_kernel_size: odd kernel side (reflect padding, as kornia's ``RandomGaussianBlur``).
        solarize_p: probability of inverting the pixels >= 0.5.
    """

    def __init__(
        self,
        flip_p: float,
        jitter: RandomOrderColorJitter,
        grayscale_p: float,
        blur_p: float,
        blur_sigma: tuple[float, float],
        blur_kernel_size: int,
        solarize_p: float,
    ) -> None:
        super().__init__()
        self.jitter = jitter
        self.flip_p, self.grayscale_p, self.blur_p, self.solarize_p = flip_p, grayscale_p, blur_p, solarize_p
        self.blur_sigma, self.blur_kernel_size = blur_sigma, blur_kernel_size

    def extra_repr(self) -> str:
        return (
            f"flip_p={self.flip_p}, grayscale_p={self.grayscale_p}, blur_p={self.blur_p}, "
            f"blur_sigma={self.blur_sigma}, blur_kernel_size={self.blur_kernel_size}, solarize_p={self.solarize_p}"
        )

    def sample_params(self, count: int, generator: torch.Generator, device: torch.device) -> ViewParams:
        """Draw every view's parameters, in a fixed order (flip, jitter, grayscale, blur coin and
        sigma, solarize), from ``generator`` on its own device; returned on ``device``."""

        def coin(p: float) -> Tensor | None:
            return None if p == 0.0 else uniform(generator, (count,), device, torch.float32) < p

        flip = coin(self.flip_p)
        jitter = self.jitter.sample_params(count, generator, device)
        gray, blur = coin(self.grayscale_p), coin(self.blur_p)
        sigma = None
        if blur is not None:
            low, high = self.blur_sigma
            sigma = low + (high - low) * uniform(generator, (count,), device, torch.float32)
        return ViewParams(flip, jitter, gray, blur, sigma, coin(self.solarize_p))

    def forward(
        self, views: Tensor, generator: torch.Generator | None = None, params: ViewParams | None = None
    ) -> Tensor:
        """(N, 3, s, s) float in [0, 1] -> the same, each view with its own draws.

        Args:
            views: the cropped views.
            generator: where fresh draws come from (None: the toolkit's generator for the views'
                device, ``ssl_toolkit.rng.stream``).
            params: draws to use instead (replay, tests), on the views' device.
        """
        if params is None:
            generator = stream(views.device) if generator is None else generator
            params = self.sample_params(views.shape[0], generator, views.device)
        views = _where(params.flip, views.flip(-1), views)
        views = self.jitter(views, params.jitter)
        if params.gray is not None:
            views = _where(params.gray, rgb_to_grayscale(views).expand_as(views), views)
        if params.blur is not None and params.sigma is not None:
            side = (self.blur_kernel_size, self.blur_kernel_size)
            sigma = params.sigma.to(views.dtype)[:, None].expand(-1, 2)
            views = _where(params.blur, gaussian_blur2d(views, side, sigma, border_type="reflect"), views)
        if params.solarize is not None:
            views = _where(params.solarize, torch.where(views < 0.5, views, 1.0 - views), views)
        return views
