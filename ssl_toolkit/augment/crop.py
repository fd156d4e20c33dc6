"""Random resized crops of whole images of different sizes, drawn and resampled in batches.

The crop geometry is torchvision's ``RandomResizedCrop.get_params`` (the crop of Szegedy et al.
2015, "Going deeper with convolutions", Sec. 6, used by SimCLR, MoCo, SwAV...), drawn for every
row from its own image's height and width: up to 10 attempts of an area fraction uniform in
``scale`` and a log-uniform aspect ratio in ``ratio``, the first whose integer box fits is kept,
else the central crop clamped to ``ratio``; the position is uniform over the places the box fits.
The uniform numbers come from the generator given (default: the toolkit's own generator for the
images' device, ``ssl_toolkit.rng.stream``) on that generator's device, and the boxes are built
there in float64 with no host sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import roi_align

from ssl_toolkit.rng import stream, uniform

ATTEMPTS = 10  # torchvision's


def draw_crop_boxes(
    sizes: Tensor, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None = None
) -> Tensor:
    """One random resized crop box per row of ``sizes``.

    Args:
        sizes: (N, 2) integer (height, width) of each row's image, any device.
        scale: area fraction range, ``0 < low <= high <= 1``.
        ratio: aspect ratio (width / height) range, ``0 < low <= high``.
        generator: generator of the uniform draws, drawn on its own device (None: the toolkit's
            generator for ``sizes``' device, ``ssl_toolkit.rng.stream``).

    Returns:
        (N, 4) int64 ``(left, top, width, height)`` in pixels, on ``sizes``' device;
        ``0 <= left``, ``left + width <= image width`` (same for top/height).
    """
    n, device = sizes.shape[0], sizes.device
    generator = stream(device) if generator is None else generator
    dtype = torch.float64 if device.type != "mps" else torch.float32  # MPS has no float64
    # Drawn in a fixed order (area, ratio, position), on the generator's device.
    u_area, u_ratio, u_place = (uniform(generator, (n, k), device, dtype) for k in (ATTEMPTS, ATTEMPTS, 2))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    height, width = sizes[:, :1].to(dtype), sizes[:, 1:].to(dtype)  # (N, 1)
    target = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)  # (N, ATTEMPTS)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first attempt that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    height, width = height.squeeze(1), width.squeeze(1)
    # No attempt fits: the central crop, its aspect ratio clamped to ``ratio`` (torchvision's fallback).
    in_ratio = width / height
    fall_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fall_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    found = fits.any(dim=1)
    w, h = torch.where(found, w, fall_w), torch.where(found, h, fall_h)
    left = torch.where(found, torch.floor(u_place[:, 0] * (width - w + 1)), torch.floor((width - w) / 2))
    top = torch.where(found, torch.floor(u_place[:, 1] * (height - h + 1)), torch.floor((height - h) / 2))
    return torch.stack([left, top, w, h], dim=1).long()


def random_resized_crops(
    images: Tensor,
    sizes: Tensor | None,
    num_views: int,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """``num_views`` random resized crops of every image, each with its own box (``draw_crop_boxes``
    relative to its whole image), resampled to ``size`` x ``size`` (``crop_resize``).

    Args:
        images: (B, C, H, W) float.
        sizes: (B, 2) integer (height, width) of each image's valid region (top-left of its canvas);
            None: every image fills (H, W).
        num_views: V.
        size: output side in px.
        scale, ratio: as in ``draw_crop_boxes``.
        generator: as in ``draw_crop_boxes`` (None: the toolkit's generator for ``images``' device).

    Returns:
        (V B, C, size, size), view-major (rows v B .. v B + B - 1 are view v), ``images``' dtype and device.
    """
    batch = images.shape[0]
    if sizes is None:
        sizes = torch.tensor(images.shape[-2:]).to(images.device, non_blocking=True).expand(batch, 2)
    rows = torch.arange(batch, device=images.device).repeat(num_views)
    boxes = draw_crop_boxes(sizes.to(images.device, non_blocking=True)[rows], scale, ratio, generator)
    return crop_resize(images, rows, boxes, size)


def crop_resize(images: Tensor, rows: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Cut ``boxes`` out of ``images`` and resample each to ``size`` x ``size``, in one batched
    ``torchvision.ops.roi_align`` call (no per-box Python loop, no host sync).

    ``roi_align`` with adaptive sampling averages ceil(box / size) bilinear samples per output
    pixel: a box filter when shrinking (antialiased), plain half-pixel bilinear (torchvision's
    ``align_corners=False`` resize) when enlarging. Bilinear samples within half a pixel of a box
    edge read the neighbouring pixel; at the edge of an image's valid region that neighbour must
    repeat the edge (``pad_collate`` writes it so), as torchvision clamps at the border.

    Args:
        images: (B, C, H, W) float.
        rows: (N,) int64, the image of each box.
        boxes: (N, 4) ``(left, top, width, height)`` pixels, from ``draw_crop_boxes``.
        size: output side.

    Returns:
        (N, C, size, size), the dtype and device of ``images``.
    """
    boxes = boxes.to(images.device, images.dtype)
    corners = torch.cat([rows.to(images.device, images.dtype)[:, None], boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    return roi_align(images, corners, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
