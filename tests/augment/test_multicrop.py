"""MultiCropAugment: configured sizes, per-sample crops, exact resampling, one backbone call per resolution."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_BACKBONE, CountingBackbone
from ssl_toolkit.augment import MultiCropAugment
from ssl_toolkit.augment.crop import draw_crop_boxes
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.heads import SimCLRHead, SwAVHead
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import LARSFactory

NO_COLOUR = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_views_have_the_configured_sizes_and_order(images: torch.Tensor) -> None:
    aug = MultiCropAugment(size=24, num_global=2, local_size=12, num_local=3)
    views = aug(images[:, :1])  # gray input -> 3 channels
    assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    assert tuple(aug.eval_view(images).shape) == (8, 3, 24, 24)
    assert len(MultiCropAugment(size=24, num_global=1, num_local=0)(images)) == 1
    # The sides it makes, declared under the recipe keys that set them (read by recipe/build.py).
    assert aug.view_sizes == {"size": 24, "local_size": 12}
    assert MultiCropAugment(size=24, local_size=12, num_local=0).view_sizes == {"size": 24}


def test_every_crop_of_every_sample_draws_its_own_box() -> None:
    # One image repeated: without colour ops, views differ only through their crop boxes.
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=g)
    torch.manual_seed(0)
    views = MultiCropAugment(size=32, num_global=2, local_size=16, num_local=4, **NO_COLOUR)(
        image.expand(6, -1, -1, -1)
    )
    for group in (views[:2], views[2:]):
        crops = torch.cat(group).flatten(1)  # (V_group * B, ...)
        distinct = torch.cdist(crops, crops) > 1e-3
        assert distinct.sum() == crops.shape[0] * (crops.shape[0] - 1)  # every pair differs


def test_full_image_crops_are_exact_resamplings() -> None:
    # scale = ratio = 1: the crop is the whole image; the global view is the image itself and a
    # half-size local view is its 2x2 box average (antialiased roi_align).
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    aug = MultiCropAugment(size=32, global_scale=(1.0, 1.0), local_size=16, num_local=2, local_scale=(1.0, 1.0),
                           crop_ratio=(1.0, 1.0), **NO_COLOUR)  # fmt: skip
    views = aug(images)
    x = images.float() / 255
    for v in views[:2]:
        torch.testing.assert_close(v, x, rtol=0, atol=1e-5)
    for v in views[2:]:
        torch.testing.assert_close(v, F.avg_pool2d(x, 2), rtol=0, atol=1e-5)


def test_local_crops_cover_the_configured_area_fraction() -> None:
    # Square crop boxes drawn for the local group cover 5-14% of a 64 px image (up to integer rounding).
    torch.manual_seed(2)
    aug = MultiCropAugment(
        size=64, num_global=1, local_size=8, num_local=1, local_scale=(0.05, 0.14), crop_ratio=(1.0, 1.0)
    )
    local = aug.local_crops
    boxes = draw_crop_boxes(torch.tensor([[64, 64]]).expand(256, 2), local.crop_scale, local.crop_ratio)
    side = boxes[:, 2].float()
    fraction = side**2 / 64**2
    assert fraction.min() > 0.04 and fraction.max() < 0.16 and fraction.std() > 0.01


@pytest.mark.parametrize("head_name", ["swav", "simclr"])
def test_fit_runs_the_backbone_once_per_resolution(head_name: str, tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    backbone = CountingBackbone(build_backbone(TINY_BACKBONE)[0])
    f = backbone.num_features
    head = (SwAVHead(in_dim=f, hidden_dim=32, out_dim=16, num_prototypes=20) if head_name == "swav"
            else SimCLRHead(in_dim=f, hidden_dim=32, out_dim=16))  # fmt: skip
    module = SSLModule(backbone, head, MultiCropAugment(size=32, local_size=16, num_local=3), LARSFactory(lr=0.3))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=SyntheticData(num_samples=32, num_val_samples=8, batch_size=8))
    # Per step: all global crops in one call, all local crops in another (2 + 3 views of 8 images).
    assert backbone.calls == [(16, 3, 32, 32), (24, 3, 16, 16)] * 2


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_global": 0}, "num_global:"), ({"num_local": -1}, "num_local:"), ({"local_size": 0}, "local_size"),
     ({"global_scale": (0.5, 0.2)}, "global_scale"), ({"local_scale": (0.0, 0.1)}, "local_scale")],
)  # fmt: skip
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiCropAugment(**kwargs)
