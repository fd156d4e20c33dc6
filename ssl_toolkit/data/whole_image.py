"""Whole images for the training views: decoded at their own resolution, batched on one canvas.

The references (torchvision's ``RandomResizedCrop`` in the SimCLR, MoCo and SwAV code, solo-learn,
FFCV) cut every view from the whole original image. The file data modules therefore hand the
training device whole images, not a center crop: each is decoded upright, scaled down only when
its longer side exceeds ``max_side``, and placed in the top-left corner of a zero canvas as large
as the batch's largest height and width; its (height, width) travels with the batch as the
fourth entry, and the device draws every crop inside that region (``ssl_toolkit.augment.crop``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ssl_toolkit.data.image_files import to_rgb


def decode_whole(source: str | os.PathLike | object, max_side: int) -> Image.Image:
    """Decode a whole image, upright RGB, its longer side at most ``max_side`` (never enlarged).

    The EXIF orientation is applied (``PIL.ImageOps.exif_transpose``). A JPEG larger than
    ``max_side`` is decoded at the smallest 1/2^k scale still >= the target size (libjpeg DCT
    scaling), then resized once (antialiased bilinear); smaller images keep every pixel.

    Args:
        source: a path, or a binary file object (a shard member).
        max_side: the largest side kept, in pixels.

    Returns:
        an RGB image of at most ``max_side`` x ``max_side``, the aspect ratio of the original.
    """
    with Image.open(source) as img:
        w, h = img.size
        shrink = min(1.0, max_side / max(w, h))
        img.draft("RGB", (math.ceil(w * shrink), math.ceil(h * shrink)))  # JPEG only; others ignore it
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no-op without an orientation tag
        img = to_rgb(img)
        img.load()
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)


def load_whole(source: str | os.PathLike | object, max_side: int) -> Tensor:
    """uint8 (3, h, w) of ``decode_whole(source, max_side)``: a channels-last view of the decoded
    (h, w, 3) pixels (no transposing copy; ``pad_batch`` copies them once, row by row)."""
    pixels = np.array(decode_whole(source, max_side), dtype=np.uint8)  # (h, w, 3), writable
    return torch.from_numpy(pixels).permute(2, 0, 1)


def pad_batch(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Whole images of different sizes on one canvas.

    Each image goes to the top-left corner of its (3, H, W) slot (H, W: the largest height and
    width); its last column and row are repeated once just outside it (where the slot has room),
    so a bilinear sample within half a pixel of its edge reads the edge, as at a real image
    border (``augment.crop.crop_resize``); the rest is 0.

    Args:
        images: B uint8 (C, h_i, w_i) tensors, one C.

    Returns:
        ``(canvas uint8 (B, C, H, W), sizes int64 (B, 2))``, ``sizes[i] = (h_i, w_i)``; the canvas
        is channels-last in memory (pixels of ``load_whole`` are copied without transposing).
    """
    sizes = torch.tensor([tuple(im.shape[-2:]) for im in images], dtype=torch.int64).view(-1, 2)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    canvas = torch.empty((len(images), height, width, images[0].shape[0]), dtype=torch.uint8).permute(0, 3, 1, 2)
    for slot, image in zip(canvas, images, strict=True):
        h, w = image.shape[-2:]
        slot[:, :h, :w] = image
        if w < width:
            slot[:, :h, w] = image[:, :, w - 1]
            slot[:, :h, w + 1 :] = 0
        if h < height:
            slot[:, h, : min(w + 1, width)] = slot[:, h - 1, : min(w + 1, width)]
            slot[:, h + 1 :] = 0
            slot[:, h, w + 1 :] = 0
    return canvas, sizes


def pad_collate(samples: Sequence[tuple[Tensor, int, int]]) -> list[Tensor]:
    """A training batch of whole images: ``[uint8 (B, 3, H, W), int64 labels (B,), int64 index
    (B,), int64 sizes (B, 2)]`` from ``(uint8 (3, h, w), label, index)`` samples (``pad_batch``)."""
    images, labels, index = zip(*samples, strict=True)
    canvas, sizes = pad_batch(images)
    return [canvas, torch.tensor(labels, dtype=torch.int64), torch.tensor(index, dtype=torch.int64), sizes]


def join_batches(parts: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Concatenate batches of ``pad_collate`` (canvases re-padded to the largest; see ``pad_batch``)
    or of plain ``[images, labels, index]`` along the batch dimension."""
    if len(parts[0]) == 4:
        images = [image[:, :h, :w] for p in parts for image, (h, w) in zip(p[0], p[3].tolist(), strict=True)]
        canvas, sizes = pad_batch(images)
        return [canvas, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]), sizes]
    return [torch.cat(columns) for columns in zip(*parts, strict=True)]
