"""Shared fixtures: a tiny timm backbone, random uint8 images, and recipe helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
TINY_BACKBONE = "test_resnet"  # timm's tiny ResNet for tests (96 features)

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
# One thread: the suite shares 2 cores with dataloader workers and 2-process tests; more threads
# oversubscribe and get much slower.
torch.set_num_threads(1)


class CountingBackbone(nn.Module):
    """Wraps a backbone and records the input shape of every call (one call per resolution)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_features, self.calls = inner, inner.num_features, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.inner(x)


@pytest.fixture
def images() -> torch.Tensor:
    """Eight random uint8 images (8, 3, 32, 32)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)


# Head keys that set a projector's or a prototype layer's width: a recipe's real widths (8,192 for
# Barlow Twins, 65,536 DINO prototypes) make a 2-step CPU run of a tiny backbone 5-10x slower
# without testing anything a narrow head does not.
HEAD_WIDTHS = ("hidden_dim", "out_dim", "pred_hidden_dim", "bottleneck_dim", "num_prototypes")


def narrow_head(head: dict, width: int = 64) -> dict:
    """``head`` (a recipe's ``head`` section, changed in place and returned) with every
    ``HEAD_WIDTHS`` key above ``width`` set to ``width``."""
    for key in HEAD_WIDTHS:
        if head.get(key, 0) > width:
            head[key] = width
    return head


def tiny_recipe(path: Path, tmp_path: Path, steps: int = 2, keep_data: bool = False) -> dict:
    """A shipped recipe turned into a seconds-long CPU run: tiny backbone, 32 px, ``steps`` steps.

    Unless ``keep_data``, the data section is replaced by 64 synthetic images.
    """
    from omegaconf import OmegaConf

    from ssl_toolkit.recipe.build import validate

    recipe = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    recipe["backbone"] = {"name": TINY_BACKBONE, "pretrained": False}
    if not keep_data:
        recipe["data"] = {
            "name": "synthetic",
            "num_samples": 64,
            "num_val_samples": 16,
            "image_size": 32,
            "batch_size": 16,
        }
    recipe["augment"]["size"] = 32
    recipe["trainer"] = {
        "max_steps": steps,
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
    }
    recipe["logger"] = {"csv": True, "wandb": False}
    recipe["out_dir"] = str(tmp_path / "run")
    validate(recipe)
    return recipe
