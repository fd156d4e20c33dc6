"""Backbones: any timm model by name, returning pooled features."""

from __future__ import annotations

import timm
from torch import nn


def build_backbone(
    name: str,
    pretrained: bool = False,
    small_image_stem: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
) -> nn.Module:
    """``timm.create_model(name, num_classes=0)``: images (B, 3, H, W) -> pooled features (B, F).

    F is ``model.num_features``. ``pretrained`` defaults to False: there may be no model hub
    (set it to True where one is reachable).

    Args:
        name: any timm model name (``timm.list_models()``), e.g. ``resnet18``, ``vit_small_patch16_224``.
        pretrained: load timm's pretrained weights (needs network access).
        small_image_stem: for 32 px data: replace a ResNet-style stem by one 3x3 stride-1 conv and
            drop the max-pool (the CIFAR stem of SimCLR and solo-learn), so a 32 px image keeps
            32x32 resolution into the first stage instead of 8x8.
        drop_path_rate: stochastic depth, for models that support it (0 = off).
        grad_checkpointing: recompute activations in the backward pass (timm's
            ``set_grad_checkpointing``): less memory for large batches on small GPUs, ~30% slower.

    Example:
        >>> model = build_backbone("resnet18", small_image_stem=True)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """
    if name not in timm.list_models() and not timm.is_model(name):
        raise ValueError(f"name: unknown timm model {name!r} (see timm.list_models())")
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)
    if small_image_stem:
        _use_small_image_stem(model, name)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _use_small_image_stem(model: nn.Module, name: str) -> None:
    conv1 = getattr(model, "conv1", None)
    maxpool = getattr(model, "maxpool", None)
    bn1 = getattr(model, "bn1", None)
    if conv1 is None or maxpool is None or not isinstance(bn1, nn.BatchNorm2d):
        raise ValueError(f"small_image_stem: supported for ResNet-style timm models (conv1/bn1/maxpool), not {name!r}")
    # A deep stem (resnet*d, resnet10t) is a Sequential; its width out is bn1's width.
    model.conv1 = nn.Conv2d(3, bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
