"""Training views are cut from the whole original image, as torchvision's RandomResizedCrop on the
original cuts them: checked on position-coded images through every data module that decodes files.

Each original is 120 x 90 px; its red channel is x / 119 and its green channel y / 89 (the colour of
a pixel is its position), its blue channel a fine vertical grating (period 3 px). Bilinear and box
resampling keep the position code linear, so every view's source box can be read back from the
view: the column profile of red gives the box's horizontal position and width, the row profile of
green its vertical ones. The crop areas are compared with torchvision's RandomResizedCrop applied
to the same original and read back the same way (two-sample Kolmogorov-Smirnov distance), the
share of the original that some view shows is accumulated, and the grating's contrast in zoomed-in
views (area 0.08-0.3) is compared with the reference's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch import Tensor

from ssl_toolkit.augment import MultiCropAugment, SimCLRAugment
from ssl_toolkit.data import FileListData, ImageFolderData, WebDatasetData
from ssl_toolkit.data.shard_writer import write_shards

WIDTH, HEIGHT, FILES = 120, 90, 16
SIZE, LOCAL = 48, 24  # view sides; the evaluation crop is SIZE of a 55 px shorter side (224 of 256)
WHOLE = {"max_side": 128}  # every original keeps its pixels
DRAWS = 128  # augmentation calls per batch: 16 images x 2 views x 128 = 4096 views per group
# Every random op but the crop and the flip off; mean 0 / std 1: the views stay in [0, 1].
CROP_ONLY: dict[str, Any] = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "mean": (0.0,) * 3, "std": (1.0,) * 3}
KS_MAX, COVERAGE_MIN, DETAIL = 0.06, 0.97, 0.10


def coded_image() -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8: red = x / 119, green = y / 89, blue = a 3 px grating."""
    x = np.arange(WIDTH)[None, :].repeat(HEIGHT, 0)
    y = np.arange(HEIGHT)[:, None].repeat(WIDTH, 1)
    grating = 0.5 + 0.4 * np.sin(2 * np.pi * x / 3)
    planes = (x / (WIDTH - 1), y / (HEIGHT - 1), grating)
    return np.rint(np.stack(planes, -1) * 255).astype(np.uint8)


def boxes_of(views: Tensor) -> tuple[Tensor, Tensor]:
    """Source boxes read back from views (N, 3, S, S) in [0, 1]: ``(area fraction (N,), box (N, 4))``
    with the box ``(u0, u1, v0, v1)`` in fractions of the original's width and height.

    The red profile along the columns (mean over rows) is a line in the column number; its slope
    over the central half (away from the clamped image border) times S is the box width as a
    fraction of the original (the sign says whether the view is flipped); green likewise.
    """
    side = views.shape[-1]
    c = torch.arange(side, dtype=torch.float64)
    middle = slice(side // 4, side - side // 4)

    def fit(profile: Tensor) -> tuple[Tensor, Tensor]:  # (N, S) -> slope, value at the centre
        t = c[middle] - c[middle].mean()
        slope = (profile[:, middle] * t).sum(1) / (t * t).sum()
        return slope, profile[:, middle].mean(1)

    du, u_mid = fit(views[:, 0].double().mean(1))
    dv, v_mid = fit(views[:, 1].double().mean(2))
    width, height = du.abs() * side * (WIDTH - 1) / WIDTH, dv.abs() * side * (HEIGHT - 1) / HEIGHT
    u_mid, v_mid = (u_mid * (WIDTH - 1) + 0.5) / WIDTH, (v_mid * (HEIGHT - 1) + 0.5) / HEIGHT
    box = torch.stack([u_mid - width / 2, u_mid + width / 2, v_mid - height / 2, v_mid + height / 2], 1)
    return width * height, box


def coverage(boxes: Tensor, cells: int = 60) -> float:
    """Share of a cells x cells grid over the original whose cell centres lie in some box."""
    centre = (torch.arange(cells, dtype=torch.float64) + 0.5) / cells
    cols = (centre >= boxes[:, :1]) & (centre <= boxes[:, 1:2])  # (N, cells)
    rows = (centre >= boxes[:, 2:3]) & (centre <= boxes[:, 3:])
    return (rows[:, :, None] & cols[:, None, :]).any(0).double().mean().item()


def ks_distance(a: Tensor, b: Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.sort().values, b.sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b, points, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def contrast(views: Tensor, area: Tensor) -> float:
    """Mean standard deviation of the blue grating in the zoomed-in views (area 0.08 to 0.3)."""
    zoomed = (area >= 0.08) & (area <= 0.3)
    assert zoomed.sum() >= 200
    return views[zoomed, 2].flatten(1).std(1).mean().item()


def reference(size: int, scale: tuple[float, float], count: int) -> Tensor:
    """``count`` views of torchvision's RandomResizedCrop (antialiased) of the original, (N, 3, size, size)."""
    torch.manual_seed(0)
    original = torch.from_numpy(coded_image()).permute(2, 0, 1).float() / 255
    crop = T.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True)
    return torch.stack([crop(original) for _ in range(count)])


def data_module(source: str, root: Path) -> Any:
    files = []
    for i in range(FILES):
        files.append(root / "photos" / f"{i:02d}.png")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(coded_image()).save(files[-1])  # lossless
    common = {"image_size": SIZE, "resize_size": 55, "batch_size": FILES, "num_workers": 0, **WHOLE}
    if source == "image_folder":
        return ImageFolderData(str(root / "photos"), labels="none", **common)
    if source == "file_list":
        (root / "train.txt").write_text("".join(f"photos/{f.name}\n" for f in files))
        return FileListData(str(root), str(root / "train.txt"), **common)
    write_shards([(str(f), -1) for f in files], str(root / "train-%02d.tar"), FILES // 2)
    return WebDatasetData(str(root / "train-{00..01}.tar"), **common)


def views_from(data: Any, augment: Any) -> list[Tensor]:
    """The views of ``DRAWS`` augmentations of one train batch, per view group, as ``SSLModule``
    makes them (``on_after_batch_transfer``: the sizes of whole images go with the images)."""
    data.setup("fit")
    images, _, _, *whole = next(iter(data.train_dataloader()))
    generator = torch.Generator().manual_seed(0)
    groups: list[list[Tensor]] = []
    for _ in range(DRAWS):
        drawn = augment(images, generator, sizes=whole[0]) if whole else augment(images, generator)
        sides = sorted({v.shape[-1] for v in drawn}, reverse=True)
        groups.append([torch.cat([v for v in drawn if v.shape[-1] == s]) for s in sides])
    return [torch.cat(parts) for parts in zip(*groups, strict=True)]


@pytest.fixture(scope="module")
def references() -> dict[tuple[float, float], Tensor]:
    count = FILES * 2 * DRAWS
    return {
        (0.08, 1.0): reference(SIZE, (0.08, 1.0), count),
        (0.14, 1.0): reference(SIZE, (0.14, 1.0), count),
        (0.05, 0.14): reference(LOCAL, (0.05, 0.14), count // 2),
    }


def test_the_read_back_recovers_torchvision_boxes() -> None:
    # The measuring stick itself: boxes read from views equal the boxes torchvision drew.
    torch.manual_seed(1)
    original = torch.from_numpy(coded_image()).permute(2, 0, 1).float() / 255
    drawn, views = [], []
    for _ in range(200):
        top, left, h, w = T.RandomResizedCrop.get_params(original, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        drawn.append((left / WIDTH, (left + w) / WIDTH, top / HEIGHT, (top + h) / HEIGHT))
        views.append(T.functional.resized_crop(original, top, left, h, w, [SIZE, SIZE], antialias=True))
    area, box = boxes_of(torch.stack(views))
    truth = torch.tensor(drawn, dtype=torch.float64)
    assert (box - truth).abs().max() < 0.02
    torch.testing.assert_close(area, (truth[:, 1] - truth[:, 0]) * (truth[:, 3] - truth[:, 2]), atol=0.01, rtol=0.03)


@pytest.mark.parametrize(
    ("source", "kind"),
    [("image_folder", "simclr"), ("image_folder", "multicrop"), ("file_list", "simclr"), ("webdataset", "multicrop")],
)
def test_views_cover_the_whole_original_like_torchvision(
    source: str, kind: str, tmp_path: Path, references: dict[tuple[float, float], Tensor]
) -> None:
    if kind == "simclr":
        augment = SimCLRAugment(SIZE, crop_scale=(0.08, 1.0), **CROP_ONLY)
        scales = [(0.08, 1.0)]
    else:
        augment = MultiCropAugment(SIZE, num_global=2, local_size=LOCAL, num_local=1, **CROP_ONLY)
        scales = [(0.14, 1.0), (0.05, 0.14)]
    groups = views_from(data_module(source, tmp_path), augment)
    all_boxes = []
    for views, scale in zip(groups, scales, strict=True):
        area, box = boxes_of(views)
        ref_area, ref_box = boxes_of(references[scale])
        distance = ks_distance(area, ref_area)
        assert distance <= KS_MAX, f"{source} {kind} {scale}: crop-area KS distance {distance:.3f} > {KS_MAX}"
        all_boxes.append(box)
    shown, ref_shown = coverage(torch.cat(all_boxes)), coverage(boxes_of(references[scales[0]])[1])
    assert ref_shown >= COVERAGE_MIN  # the measure reaches it on the reference
    assert shown >= COVERAGE_MIN, f"{source} {kind}: the views show {shown:.1%} of the original"


def test_zoomed_views_keep_fine_detail_like_torchvision(
    tmp_path: Path, references: dict[tuple[float, float], Tensor]
) -> None:
    augment = SimCLRAugment(SIZE, crop_scale=(0.08, 1.0), **CROP_ONLY)
    (views,) = views_from(data_module("image_folder", tmp_path), augment)
    ref = references[(0.08, 1.0)]
    ours, theirs = contrast(views, boxes_of(views)[0]), contrast(ref, boxes_of(ref)[0])
    assert abs(ours / theirs - 1) <= DETAIL, f"grating contrast {ours:.3f} vs torchvision's {theirs:.3f}"
