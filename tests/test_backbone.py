from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_toolkit.backbone import build_backbone


def test_any_timm_model_gives_pooled_features() -> None:
    for name in ("test_resnet", "test_vit"):
        model = build_backbone(name)
        size = 32 if name == "test_resnet" else model.pretrained_cfg["input_size"][-1]
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, model.num_features)


def test_small_image_stem_keeps_resolution() -> None:
    plain = build_backbone("resnet18").eval()
    small = build_backbone("resnet18", small_image_stem=True).eval()
    assert isinstance(small.maxpool, nn.Identity)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    x = torch.randn(1, 3, 32, 32)
    # Standard stem: 32 -> 8 before the stages (stride 2 conv + stride 2 pool); small stem: 32 -> 32.
    assert plain.forward_features(x).shape[-1] == 1
    assert small.forward_features(x).shape[-1] == 4
    assert small(x).shape == (1, 512)


def test_deep_stem_resnet_supported() -> None:
    model = build_backbone("resnet10t", small_image_stem=True)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="name: unknown timm model"):
        build_backbone("resnet_does_not_exist")
    with pytest.raises(ValueError, match="small_image_stem"):
        build_backbone("test_vit", small_image_stem=True)


def test_pretrained_defaults_false() -> None:
    import inspect

    assert inspect.signature(build_backbone).parameters["pretrained"].default is False
