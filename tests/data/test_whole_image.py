"""Whole images for the training views: decode, canvas with edges, joining, crop boxes inside them."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torchvision.ops import roi_align

from ssl_toolkit.augment.crop import draw_crop_boxes
from ssl_toolkit.data.whole_image import decode_whole, join_batches, load_whole, pad_batch, pad_collate


def _jpeg(size: tuple[int, int], orientation: int | None = None) -> io.BytesIO:
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.new("RGB", size, (200, 30, 60)).save(out, format="JPEG", quality=95, exif=exif)
    out.seek(0)
    return out


def test_small_images_keep_every_pixel_large_ones_shrink_to_max_side(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    pixels = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path)
    assert torch.equal(load_whole(str(path), 64), pixels)  # PNG, smaller than max_side: as it is
    assert decode_whole(_jpeg((2000, 1500)), 512).size == (512, 384)  # reduced-scale decode, then one resize
    assert decode_whole(_jpeg((300, 1000)), 512).size == (154, 512)
    assert decode_whole(_jpeg((500, 375)), 512).size == (500, 375)


def test_exif_orientation_is_applied() -> None:
    assert decode_whole(_jpeg((40, 30), orientation=6), 512).size == (30, 40)  # rotated 90 degrees


def test_canvas_places_images_top_left_and_repeats_their_edge() -> None:
    a = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 3, 4)  # (C, h, w)
    b = torch.full((2, 5, 2), 7, dtype=torch.uint8)
    canvas, sizes = pad_batch([a, b])
    assert canvas.shape == (2, 2, 5, 4) and sizes.tolist() == [[3, 4], [5, 2]]
    assert torch.equal(canvas[0, :, :3], a) and torch.equal(canvas[1, :, :, :2], b)
    assert torch.equal(canvas[0, :, 3], a[:, 2]) and (canvas[0, :, 4] == 0).all()  # edge row, then zeros
    assert torch.equal(canvas[1, :, :, 2], b[:, :, 1]) and (canvas[1, :, :, 3] == 0).all()  # edge column


def test_a_crop_at_the_edge_of_a_padded_image_equals_the_crop_of_the_image_alone() -> None:
    g = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8, generator=g)
    large = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8, generator=g)
    canvas, _ = pad_batch([small, large])
    box = torch.tensor([[0.0, 6.0, 5.0, 11.0, 9.0]])  # the bottom-right corner of ``small``, enlarged
    alone = roi_align(small[None].float(), box, (16, 16), 1.0, -1, True)
    padded = roi_align(canvas.float(), box, (16, 16), 1.0, -1, True)
    torch.testing.assert_close(padded, alone)


def test_join_re_pads_to_the_largest_canvas() -> None:
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((4, 6), (8, 3), (5, 5))]
    first = pad_collate([(images[0], 1, 0), (images[1], 2, 1)])
    second = pad_collate([(images[2], 3, 2)])
    joined = join_batches([first, second])
    expected = pad_collate([(image, i + 1, i) for i, image in enumerate(images)])
    for got, want in zip(joined, expected, strict=True):
        assert torch.equal(got, want)


def test_crop_boxes_follow_torchvision_and_stay_inside_their_image() -> None:
    sizes = torch.tensor([[90, 120], [120, 90], [7, 300]]).repeat_interleave(2000, 0)
    boxes = draw_crop_boxes(sizes, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    left, top, w, h = boxes.unbind(1)
    assert (left >= 0).all() and (top >= 0).all() and (w >= 1).all() and (h >= 1).all()
    assert (left + w <= sizes[:, 1]).all() and (top + h <= sizes[:, 0]).all()
    # 7 x 300 px: no attempt fits, the central crop with the widest allowed ratio (torchvision's fallback)
    assert boxes[-1].tolist() == [145, 0, round(7 * 4 / 3), 7]
    torch.manual_seed(0)
    image = torch.empty(3, 90, 120)
    theirs = torch.tensor([math.prod(T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])[2:])
                           for _ in range(2000)], dtype=torch.float64)  # fmt: skip
    ours = (w[:2000] * h[:2000]).double()
    grid = torch.linspace(0, 90 * 120, 200, dtype=torch.float64)
    gap = ((ours[:, None] <= grid).double().mean(0) - (theirs[:, None] <= grid).double().mean(0)).abs().max()
    assert gap < 0.05  # the same area distribution (two-sample KS, 2000 draws each)


def test_crop_boxes_come_from_the_generator_only() -> None:
    sizes = torch.tensor([[90, 120]] * 64)
    torch.manual_seed(5)
    first = draw_crop_boxes(sizes, (0.08, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(3))
    torch.manual_seed(6)  # the global generator does not matter
    assert torch.equal(draw_crop_boxes(sizes, (0.08, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(3)), first)


@pytest.mark.parametrize("max_side", [1, 64])
def test_tiny_max_side_keeps_at_least_one_pixel(max_side: int) -> None:
    w, h = decode_whole(_jpeg((400, 3)), max_side).size
    assert max(w, h) == max_side and min(w, h) >= 1
