"""SimCLRAugment: shapes, per-sample randomness, seeding, exact ops when isolated, eval view, args."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ssl_toolkit.augment import AUGMENTS, SimCLRAugment
from ssl_toolkit.augment.crop import draw_crop_boxes

SIZE = 32
# Every random op off: crop (1, 1) x (1, 1) keeps a square image whole; mean 0 / std 1 keeps [0, 1].
OFF: dict[str, object] = {
    "crop_scale": (1.0, 1.0),
    "crop_ratio": (1.0, 1.0),
    "flip_p": 0.0,
    "jitter_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": 0.0,
    "solarize_p": 0.0,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
}


@pytest.fixture
def batch() -> Tensor:
    """Sixteen random uint8 images (16, 3, 40, 48), non-square so the crop has to resize."""
    return torch.randint(0, 256, (16, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def square() -> Tensor:
    """Four random uint8 images (4, 3, SIZE, SIZE)."""
    return torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_registry() -> None:
    assert AUGMENTS["simclr"] is SimCLRAugment


@pytest.mark.parametrize("num_views", [1, 2, 3])
def test_views_shape_dtype_count(batch: Tensor, num_views: int) -> None:
    views = SimCLRAugment(SIZE, num_views=num_views, solarize_p=0.5)(batch)
    assert len(views) == num_views
    for view in views:
        assert view.shape == (16, 3, SIZE, SIZE) and view.dtype == torch.float32
        assert torch.isfinite(view).all() and not view.requires_grad
    assert SimCLRAugment(SIZE).view_sizes == {"size": SIZE}  # declared, under the recipe key


def test_gray_image_normalizes_exactly() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    augment = SimCLRAugment(SIZE, **(OFF | {"mean": mean, "std": std}))
    views = augment(torch.full((2, 3, 48, 48), 128, dtype=torch.uint8))
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    for view in views:
        torch.testing.assert_close(view, expected.view(1, 3, 1, 1).expand_as(view), atol=1e-6, rtol=0)


def test_everything_off_is_identity(square: Tensor) -> None:
    for view in SimCLRAugment(SIZE, **OFF)(square):
        torch.testing.assert_close(view, square.float() / 255, atol=1e-6, rtol=0)


def test_parameters_differ_per_sample_and_view(batch: Tensor) -> None:
    same = batch[:1].expand(16, -1, -1, -1)
    first, second = SimCLRAugment(SIZE)(same)
    for view in (first, second):
        distances = torch.cdist(view.flatten(1), view.flatten(1))
        assert (distances + torch.eye(16) * 1e9).min() > 1e-3  # no two samples alike
    assert ((first - second).flatten(1).abs().amax(1) > 1e-3).all()


def test_crop_boxes_drawn_per_sample(batch: Tensor) -> None:
    same = batch[:1].expand(16, -1, -1, -1)
    (view,) = SimCLRAugment(SIZE, num_views=1, **(OFF | {"crop_scale": (0.08, 1.0), "crop_ratio": (0.75, 4 / 3)}))(same)
    assert len({tuple(row) for row in view.flatten(1).mul(1e4).round().int().tolist()}) == 16


def test_crop_resamples_like_torchvision(batch: Tensor) -> None:
    # Enlarging crops (box <= output): torchvision's half-pixel bilinear resize of the box. Only
    # the outermost output pixels differ: roi_align interpolates with the real neighbours just
    # outside the box where cropping first clamps to the box's own edge.
    small = SimCLRAugment(SIZE, num_views=1, **(OFF | {"crop_scale": (0.2, 0.4), "crop_ratio": (0.75, 4 / 3)}))
    (view,) = small(batch, generator=torch.Generator().manual_seed(3))
    # The crop boxes are the generator's first draws: replayed from the same seed.
    sizes = torch.tensor([[40, 48]]).expand(16, 2)
    boxes = draw_crop_boxes(sizes, small.crop_scale, small.crop_ratio, torch.Generator().manual_seed(3)).tolist()
    checked = 0
    for i, (left, top, w, h) in enumerate(boxes):
        if h <= SIZE and w <= SIZE:
            expected = TF.resized_crop(batch[i].float() / 255, top, left, h, w, [SIZE, SIZE], antialias=True)
            inner = (slice(None), slice(2, -2), slice(2, -2))
            torch.testing.assert_close(view[i][inner], expected[inner], atol=1e-5, rtol=0)
            checked += 1
    assert checked >= 8


def test_shrinking_crop_is_antialiased() -> None:
    # A 1-px checkerboard shrunk 4x: an antialiased resize gives ~0.5 everywhere, plain bilinear
    # point sampling would give stripes of 0 and 1.
    board = ((torch.arange(128)[:, None] + torch.arange(128)[None, :]) % 2 * 255).to(torch.uint8)
    image = board.expand(1, 3, 128, 128)
    (view,) = SimCLRAugment(SIZE, num_views=1, **OFF)(image)
    assert view.shape == (1, 3, SIZE, SIZE)
    assert (view - 0.5).abs().max() < 0.02
    expected = TF.resize(image.float() / 255, [SIZE, SIZE], antialias=True)
    torch.testing.assert_close(view, expected, atol=0.02, rtol=0)


def test_reproducible_under_seed(batch: Tensor) -> None:
    augment = SimCLRAugment(SIZE, solarize_p=0.2)
    runs = []
    for global_seed, seed in ((0, 0), (5, 0), (0, 1)):
        torch.manual_seed(global_seed)  # plays no part
        runs.append(torch.stack(augment(batch, torch.Generator().manual_seed(seed))))
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_solarize_inverts_pixels_above_half(square: Tensor) -> None:
    (view,) = SimCLRAugment(SIZE, num_views=1, **(OFF | {"solarize_p": 1.0}))(square)
    x = square.float() / 255
    torch.testing.assert_close(view, torch.where(x > 0.5, 1 - x, x), atol=1e-6, rtol=0)


def test_flip_and_grayscale_when_certain(square: Tensor) -> None:
    (view,) = SimCLRAugment(SIZE, num_views=1, **(OFF | {"flip_p": 1.0, "grayscale_p": 1.0}))(square)
    x = (square.float() / 255).flip(-1)
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(view, gray[:, None].expand_as(view), atol=1e-5, rtol=0)


def test_blur_smooths_and_keeps_mean(square: Tensor) -> None:
    (view,) = SimCLRAugment(SIZE, num_views=1, **(OFF | {"blur_p": 1.0, "blur_sigma": (1.0, 2.0)}))(square)
    x = square.float() / 255
    assert view.std() < 0.8 * x.std()
    torch.testing.assert_close(view.mean(), x.mean(), atol=1e-2, rtol=0)


def test_default_blur_kernel_is_ten_percent_and_odd() -> None:
    assert SimCLRAugment(224).blur_kernel_size == 23
    assert SimCLRAugment(32).blur_kernel_size == 3
    assert SimCLRAugment(64).blur_kernel_size == 7
    assert SimCLRAugment(64, blur_kernel_size=5).blur_kernel_size == 5


def test_eval_view_is_deterministic_and_resizes(batch: Tensor, square: Tensor) -> None:
    augment = SimCLRAugment(SIZE)
    torch.manual_seed(0)
    first = augment.eval_view(batch)
    torch.manual_seed(1)
    assert torch.equal(augment.eval_view(batch), first)
    assert first.shape == (16, 3, SIZE, SIZE) and first.dtype == torch.float32
    mean, std = torch.tensor((0.485, 0.456, 0.406)), torch.tensor((0.229, 0.224, 0.225))
    expected = (square.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.testing.assert_close(augment.eval_view(square), expected, atol=1e-5, rtol=0)


def test_single_channel_input(square: Tensor) -> None:
    gray = square[:, :1]
    augment = SimCLRAugment(SIZE, **(OFF | {"jitter_p": 1.0, "crop_scale": (0.2, 1.0)}))
    for view in augment(gray) + [augment.eval_view(gray)]:
        assert view.shape == (4, 3, SIZE, SIZE)
        torch.testing.assert_close(view[:, 0], view[:, 2], atol=1e-5, rtol=0)  # still gray


def test_fp32_under_autocast(square: Tensor) -> None:
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        views = SimCLRAugment(SIZE)(square)
        evaluated = SimCLRAugment(SIZE).eval_view(square)
    assert all(view.dtype == torch.float32 for view in views) and evaluated.dtype == torch.float32


def test_yaml_lists_accepted(square: Tensor) -> None:
    augment = SimCLRAugment(
        SIZE, crop_scale=[0.2, 1], crop_ratio=[1, 1], blur_sigma=[0.1, 2], mean=[0.5] * 3, std=[0.5] * 3
    )
    assert augment(square)[0].shape == (4, 3, SIZE, SIZE)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 0}, "size"),
        ({"num_views": 0}, "num_views"),
        ({"crop_scale": (0.9, 0.1)}, "crop_scale"),
        ({"crop_scale": (0.1, 1.5)}, "crop_scale"),
        ({"crop_scale": (0.5,)}, "crop_scale"),
        ({"crop_ratio": (1.5, 0.5)}, "crop_ratio"),
        ({"flip_p": 1.2}, "flip_p"),
        ({"jitter_p": -0.1}, "jitter_p"),
        ({"grayscale_p": 2.0}, "grayscale_p"),
        ({"blur_p": -1.0}, "blur_p"),
        ({"solarize_p": 1.01}, "solarize_p"),
        ({"hue": 0.7}, "hue"),
        ({"brightness": -0.2}, "brightness"),
        ({"blur_sigma": (2.0, 0.1)}, "blur_sigma"),
        ({"blur_kernel_size": 4}, "blur_kernel_size"),
        ({"blur_kernel_size": 1}, "blur_kernel_size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
    ],
)
def test_bad_args_raise_naming_the_argument(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:? must"):
        SimCLRAugment(**({"size": SIZE} | kwargs))


@pytest.mark.parametrize(
    "images",
    [torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8, dtype=torch.uint8)],
)
def test_bad_images_raise(images: Tensor) -> None:
    with pytest.raises(ValueError, match="^images must"):
        SimCLRAugment(SIZE)(images)
