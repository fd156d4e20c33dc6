"""Backbone contract: every timm family in the table trains, embeds and exports through the toolkit.

For each row (a tiny variant, small sizes): a SimCLR two-view step, a multi-crop step (SwAV, global
and local crops of two sizes; families that timm builds for one size only are refused in one line
instead), ``embed``, and export -> reload through plain ``timm.create_model`` with equal features.
A new backbone family gets a row; removing a required one fails ``test_table_covers_the_families``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_recipe
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.errors import RecipeError
from ssl_toolkit.heads.base import BatchInfo, Views
from ssl_toolkit.module import SSLModule
from ssl_toolkit.recipe.build import build_parts
from ssl_toolkit.run.export import export_backbone


@dataclass(frozen=True)
class Row:
    family: str
    name: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    small_image_stem: bool = False
    size: int = 32  # global views (and embed / export)
    local_size: int = 16  # local crops of the multi-crop step
    one_size: bool = False  # timm builds it for one input size only: multi-crop is refused
    width_differs: bool = False  # pooled width (what the model returns) != num_features


CASES = [
    Row("resnet", "resnet18", {"layers": [1, 1, 1, 1]}),  # ResNet-10 widths: fast, same code path
    Row("resnet_small_image_stem", "resnet18", {"layers": [1, 1, 1, 1]}, small_image_stem=True),
    Row("resnet_d", "resnet18d", {"layers": [1, 1, 1, 1]}),
    Row("convnext", "convnext_atto", size=64, local_size=32),  # stem 4 x 3 downsamplings: >= 32 px
    Row("efficientnet", "efficientnet_b0"),
    Row("mobilenetv3", "mobilenetv3_small_050", width_differs=True),  # conv head after pooling: 288 -> 1024
    Row("regnet", "regnetx_002"),
    Row("vit", "vit_tiny_patch16_224", {"depth": 2, "patch_size": 8}),  # 4 x 4 patches at 32 px
    Row("deit", "deit_tiny_patch16_224", {"depth": 2}),
    Row("windowed_transformer", "swin_tiny_patch4_window7_224",
        {"depths": [1, 1, 1, 1], "embed_dim": 32, "num_heads": [1, 2, 4, 8]}),
    Row("hybrid_conv_transformer", "mobilevitv2_050"),
    Row("hybrid_fixed_size", "levit_128s", one_size=True),
    Row("efficientvit", "efficientvit_b0", width_differs=True),  # linear attention; 128 -> 1280
]  # fmt: skip
REQUIRED = {"resnet", "resnet_small_image_stem", "resnet_d", "convnext", "efficientnet", "mobilenetv3", "regnet",
            "vit", "deit", "windowed_transformer", "hybrid_conv_transformer"}  # fmt: skip
IDS = [row.family for row in CASES]


def row_recipe(row: Row, method: str, tmp: Path) -> dict:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{method}.yaml", tmp)
    recipe["backbone"] = {"name": row.name, "pretrained": False, "small_image_stem": row.small_image_stem,
                          "model_kwargs": row.model_kwargs}  # fmt: skip
    recipe["data"].update(num_samples=16, num_val_samples=8, batch_size=8)
    recipe["augment"]["size"] = row.size
    if method == "swav":
        recipe["augment"].update(local_size=row.local_size, num_local=2)
        recipe["head"].update(hidden_dim=32, out_dim=16, num_prototypes=24, freeze_prototypes_steps=0)
    else:
        recipe["head"].update(hidden_dim=32, out_dim=16)
    return recipe


def simclr_module(row: Row) -> tuple[SSLModule, dict]:
    """One SimCLR module per row, shared by the tests of that row (built once)."""
    return _simclr_module(row.family)


@functools.cache
def _simclr_module(family: str) -> tuple[SSLModule, dict]:
    row = next(r for r in CASES if r.family == family)
    recipe = row_recipe(row, "simclr", Path("/nonexistent"))
    torch.manual_seed(0)
    return build_parts(recipe).module, recipe


def train_step(module: SSLModule, images: torch.Tensor) -> list[torch.Tensor]:
    """Augment, backbone once per resolution, head loss, backward; returns the view features."""
    module.train()
    views = module.augment(images)
    feats = module.forward_views(views)
    n = images.shape[0]
    info = BatchInfo(labels=torch.zeros(n, dtype=torch.long), index=torch.arange(n), step=0, epoch=0)
    out = module.head(Views(feats), info)
    assert math.isfinite(float(out.loss.detach()))
    module.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = [p.grad for p in module.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    return feats


def test_table_covers_the_families() -> None:
    families = {row.family for row in CASES}
    assert REQUIRED <= families, f"missing: {REQUIRED - families}"
    assert len(CASES) >= 12 and len(families) == len(CASES)
    assert any(row.width_differs for row in CASES) and any(row.one_size for row in CASES)


@pytest.mark.parametrize("row", CASES, ids=IDS)
def test_simclr_two_view_step(row: Row, images: torch.Tensor) -> None:
    module, _ = simclr_module(row)
    backbone = module.backbone
    assert module.feature_dim == module.backbone_facts.feature_dim == module.head.projector[0].in_features
    assert (module.feature_dim != backbone.num_features) == row.width_differs
    feats = train_step(module, images)
    assert [f.shape for f in feats] == [(8, module.feature_dim)] * 2


@pytest.mark.parametrize("row", CASES, ids=IDS)
def test_multicrop_step(row: Row, images: torch.Tensor, tmp_path: Path) -> None:
    recipe = row_recipe(row, "swav", tmp_path)
    if row.one_size:
        with pytest.raises(RecipeError, match=r"^backbone.name: .* runs at one input size only") as err:
            build_parts(recipe)
        assert "augment.local_size=" in str(err.value) and "\n" not in str(err.value)
        return
    module = build_parts(recipe).module
    feats = train_step(module, images)
    assert [f.shape[1] for f in feats] == [module.feature_dim] * 4 and len(feats) == 4


@pytest.mark.parametrize("row", CASES, ids=IDS)
def test_embed(row: Row, images: torch.Tensor) -> None:
    module, _ = simclr_module(row)
    module.eval()
    out = module.embed(images)
    assert out.shape == (8, module.feature_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out, module.backbone(module.augment.eval_view(images)))


@pytest.mark.parametrize("row", CASES, ids=IDS)
def test_export_reloads_through_plain_timm(row: Row, images: torch.Tensor, tmp_path: Path) -> None:
    module, recipe = simclr_module(row)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "recipe": recipe, "global_step": 1}, ckpt)
    result = export_backbone(ckpt, tmp_path / "backbone.safetensors")
    assert result.feature_dim == module.feature_dim
    if row.small_image_stem:  # another first conv than timm's: loads into build_backbone
        model = build_backbone(row.name, small_image_stem=True, model_kwargs=row.model_kwargs)[0]
        model.load_state_dict(load_file(str(result.path)), strict=True)
    else:
        overlay = {"file": str(result.path), "num_classes": 0}
        model = timm.create_model(row.name, pretrained=True, pretrained_cfg_overlay=overlay, **result.timm_kwargs)
    x = module.augment.eval_view(images)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), module.eval().backbone(x))
