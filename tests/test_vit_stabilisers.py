"""MoCo v3's ViT stabilisers as backbone options: the fixed 2-D sin-cos position embedding (equal to
the authors' vits.py), the frozen random patch projection, and the ViT-S recipe that uses them."""

from __future__ import annotations

import math
from functools import reduce
from operator import mul

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import REPO
from ssl_toolkit.backbone import build_backbone, sincos_2d_embedding

VIT = "vit_small_patch16_224"
SIZES = {"augment.size": 32}  # 2 x 2 patches of 16 px: seconds on a CPU
TINY = {"depth": 1, "num_heads": 12}


def authors_sincos(h: int, w: int, embed_dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """facebookresearch/moco-v3 ``vits.py`` ``build_2d_sincos_position_embedding``, transcribed
    (``torch.meshgrid``'s default 'ij' indexing, as in 2021), without the class-token row."""
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1.0 / (temperature**omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    return torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)


@pytest.mark.parametrize("h,w,dim", [(14, 14, 384), (2, 2, 8), (3, 5, 16)])
def test_sincos_embedding_is_the_authors(h: int, w: int, dim: int) -> None:
    torch.testing.assert_close(sincos_2d_embedding(h, w, dim), authors_sincos(h, w, dim), rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_embedding(h, w, dim + 2)


def test_options_fix_the_embedding_and_freeze_the_patch_projection() -> None:
    torch.manual_seed(0)
    model = build_backbone(VIT, model_kwargs=TINY, input_sizes=SIZES, sincos_pos_embed=True, freeze_patch_embed=True)[0]
    # vits.py: a zero row for the class token, then the patch grid's sin-cos rows; not trained.
    expected = torch.cat([torch.zeros(1, 384), authors_sincos(2, 2, 384)])[None]
    torch.testing.assert_close(model.pos_embed.detach(), expected, rtol=0, atol=0)
    proj = model.patch_embed.proj
    bound = math.sqrt(6.0 / float(3 * reduce(mul, proj.kernel_size, 1) + 384))  # vits.py's Xavier bound
    assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound
    assert torch.equal(proj.bias, torch.zeros(384))
    assert not model.pos_embed.requires_grad and not any(p.requires_grad for p in proj.parameters())
    assert model.blocks[0].attn.num_heads == 12  # the authors' ViT-S, through model_kwargs
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trained, lr=0.1)
    model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    opt.step()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    for n, p in model.named_parameters():
        if n in frozen:
            torch.testing.assert_close(p.detach(), frozen[n], rtol=0, atol=0, msg=n)
    assert set(frozen) == {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}


def test_off_by_default_and_refused_without_a_patch_embedding() -> None:
    model = build_backbone(VIT, model_kwargs=TINY, input_sizes=SIZES)[0]
    assert model.pos_embed.requires_grad and model.patch_embed.proj.weight.requires_grad
    for key in ("sincos_pos_embed", "freeze_patch_embed"):
        with pytest.raises(ValueError, match=f"^{key}: supported for ViT-style"):
            build_backbone("test_resnet", input_sizes=SIZES, **{key: True})


def test_mocov3_vit_recipe_backbone_builds() -> None:
    spec = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "imagenet100" / "mocov3_vit.yaml"))["backbone"]
    assert spec["sincos_pos_embed"] and spec["freeze_patch_embed"] and spec["model_kwargs"]["num_heads"] == 12
    spec["model_kwargs"] = {**spec["model_kwargs"], "depth": 1}  # the recipe's model, one block deep
    model = build_backbone(**spec, input_sizes=SIZES)[0]
    assert isinstance(model.pos_embed, nn.Parameter) and not model.pos_embed.requires_grad
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 384)
