from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import REPO, TINY_BACKBONE, tiny_recipe
from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.backbone import BatchNormStats, build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.heads import SimCLRHead
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import SGDFactory
from ssl_toolkit.recipe.build import backbone_kwargs, build_parts
from ssl_toolkit.rng import seed_streams
from ssl_toolkit.run.cli import main

TINY = TINY_BACKBONE


def test_any_timm_model_gives_pooled_features() -> None:
    for name in ("test_resnet", "test_vit"):
        model = build_backbone(name)[0]
        size = 32 if name == "test_resnet" else model.pretrained_cfg["input_size"][-1]
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, model.num_features)


def test_small_image_stem_keeps_resolution() -> None:
    plain = build_backbone("resnet18")[0].eval()
    small = build_backbone("resnet18", small_image_stem=True)[0].eval()
    assert isinstance(small.maxpool, nn.Identity)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    x = torch.randn(1, 3, 32, 32)
    # Standard stem: 32 -> 8 before the stages (stride 2 conv + stride 2 pool); small stem: 32 -> 32.
    assert plain.forward_features(x).shape[-1] == 1
    assert small.forward_features(x).shape[-1] == 4
    assert small(x).shape == (1, 512)


def test_deep_stem_resnet_supported() -> None:
    model = build_backbone("resnet10t", small_image_stem=True)[0]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="name: unknown timm model"):
        build_backbone("resnet_does_not_exist")
    with pytest.raises(ValueError, match="small_image_stem"):
        build_backbone("test_vit", small_image_stem=True)


def test_pretrained_defaults_false() -> None:
    import inspect

    assert inspect.signature(build_backbone).parameters["pretrained"].default is False


# --- feature width, input sizes, name errors (issue 15) ---------------------------------------
def test_feature_width_is_what_the_model_returns() -> None:
    # MobileNetV3 has a conv head after the pooling: 288 channels pooled, 1024 features out.
    model, facts = build_backbone("mobilenetv3_small_050", input_sizes={"augment.size": 32})
    assert (model.num_features, facts.feature_dim) == (288, 1024)
    assert not hasattr(model, "feature_dim")  # the facts live beside the model, not on it
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1024)
    assert model.training  # the dry forward leaves the mode as it was


def test_dry_forward_changes_no_state_and_no_rng() -> None:
    torch.manual_seed(0)
    reference = build_backbone(TINY, input_sizes=None)[0]
    expected_rng = torch.rand(1)
    torch.manual_seed(0)
    model = build_backbone(TINY, input_sizes={"augment.size": 32, "augment.local_size": 16})[0]
    assert torch.equal(torch.rand(1), expected_rng)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key  # same init, no BN update
    assert int(model.bn1.num_batches_tracked) == 0


def test_fixed_size_models_are_built_for_the_recipe_sizes() -> None:
    vit = "deit_tiny_patch16_224"  # timm builds it for 224 px; one block keeps the test fast
    single, facts = build_backbone(vit, model_kwargs={"depth": 1}, input_sizes={"augment.size": 32})
    assert facts.timm_kwargs == {"depth": 1, "img_size": 32}
    assert single(torch.randn(2, 3, 32, 32)).shape == (2, 192) and facts.feature_dim == 192
    with pytest.raises(AssertionError, match="doesn't match model"):  # timm's fixed size
        single(torch.randn(2, 3, 16, 16))
    sizes = {"augment.size": 32, "augment.local_size": 16}
    multi, facts = build_backbone(vit, model_kwargs={"depth": 1}, input_sizes=sizes)
    assert facts.timm_kwargs == {"depth": 1, "img_size": 32, "dynamic_img_size": True}
    assert multi(torch.randn(2, 3, 16, 16)).shape == (2, facts.feature_dim)
    # A CNN gets no size keywords.
    assert build_backbone(TINY, input_sizes={"augment.size": 32})[1].timm_kwargs == {}


@pytest.mark.parametrize(
    ("name", "sizes", "message"),
    [
        ("test_vit", {"augment.size": 24}, "'test_vit' cannot run at augment.size=24 px: its patch size 16 does "
         "not divide it (sizes that work: 16 px, 32 px)"),
        ("test_vit", {"augment.size": 32, "augment.local_size": 20}, "augment.local_size=20 px: its patch size"),
        ("levit_128s", {"augment.size": 32, "augment.local_size": 16}, "runs at one input size only (32 px"),
        ("test_convnext", {"augment.size": 32, "augment.local_size": 8}, "cannot run at augment.local_size=8 px "
         "(sizes that work: 32 px, 64 px)"),
    ],
)  # fmt: skip
def test_sizes_a_model_cannot_run_at_are_refused(name: str, sizes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"^name: ") as err:
        build_backbone(name, input_sizes=sizes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_timm_name_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        "resnet10t.a1_in1k": "name: 'resnet10t' has no pretrained tag 'a1_in1k' (tags: c3_in1k)",
        "resnt18": "name: unknown timm model 'resnt18'; did you mean resnet18",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError) as err:
            build_backbone(name)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^model_kwargs.bogus: timm's 'test_resnet' does not take it"):
        build_backbone(TINY, model_kwargs={"bogus": 1})

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ValueError, match=r"^name: cannot fetch 'hf-hub:timm/x' from the Hugging Face hub"):
        build_backbone("hf-hub:timm/x")
    with pytest.raises(ValueError, match=r"^pretrained: cannot load the pretrained weights of 'resnet18'"):
        build_backbone("resnet18", pretrained=True)


@pytest.mark.parametrize("command", ["fit", "bench"])
def test_cli_refuses_timm_name_errors_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path)
    recipe["backbone"]["name"] = "resnet10t.a1_in1k"
    path = tmp_path / "r.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ssl-toolkit: error: backbone.name: 'resnet10t' has no pretrained tag 'a1_in1k' (tags: c3_in1k)"
    assert not (tmp_path / "run").exists()


def test_recipe_passes_the_view_sizes(tmp_path: Path) -> None:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "swav.yaml", tmp_path)
    assert backbone_kwargs(recipe)["input_sizes"] == {"augment.size": 32, "augment.local_size": 16}
    recipe["augment"]["num_local"] = 0
    assert backbone_kwargs(recipe)["input_sizes"] == {"augment.size": 32}
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path)
    assert backbone_kwargs(recipe, pretrained=False) == {
        "name": TINY, "pretrained": False, "input_sizes": {"augment.size": 32}}  # fmt: skip
    recipe["backbone"]["name"] = "mobilenetv3_small_050"
    parts = build_parts(recipe)
    assert parts.module.feature_dim == 1024 and parts.module.head.projector[0].in_features == 1024


# --- gradient checkpointing and BatchNorm statistics ------------------------------------------
def _bn_stats_after_fit(grad_checkpointing: bool, steps: int = 3) -> tuple[dict, dict]:
    pl.seed_everything(0, verbose=False)
    seed_streams(0)  # the augmentation's draws (a bare Trainer has no RNGState to seed them)
    backbone, facts = build_backbone("resnet10t", grad_checkpointing=grad_checkpointing, input_sizes={"size": 32})
    assert facts.recomputes_forward == grad_checkpointing
    module = SSLModule(backbone, SimCLRHead(in_dim=facts.feature_dim, hidden_dim=32, out_dim=16),
                       SimCLRAugment(size=32), SGDFactory(lr=0.1), backbone_facts=facts)  # fmt: skip
    data = SyntheticData(num_samples=16 * steps, num_val_samples=16, batch_size=16, num_workers=0)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
    bn = {k: v for k, v in backbone.state_dict().items() if "running" in k or "num_batches" in k}
    weights = {k: v for k, v in backbone.state_dict().items() if k not in bn}
    return bn, weights


def test_grad_checkpointing_keeps_one_batchnorm_update_per_step() -> None:
    plain_bn, plain_w = _bn_stats_after_fit(False)
    ckpt_bn, ckpt_w = _bn_stats_after_fit(True)
    counts = {k: int(v) for k, v in ckpt_bn.items() if k.endswith("num_batches_tracked")}
    assert len(counts) > 5 and set(counts.values()) == {3}  # the checkpointed stages too (6 without the fix)
    for key, value in plain_bn.items():
        torch.testing.assert_close(ckpt_bn[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in plain_w.items():  # and the training itself is unchanged
        torch.testing.assert_close(ckpt_w[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_batchnorm_stats_restores_what_recomputation_changes() -> None:
    model = build_backbone(TINY, input_sizes={"augment.size": 32})[0]
    keeper = BatchNormStats()
    model(torch.randn(4, 3, 32, 32))
    keeper.save(model)
    after_forward = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(4, 3, 32, 32))  # what a recomputation in the backward pass would do
    assert not torch.equal(model.bn1.running_mean, after_forward["bn1.running_mean"])
    keeper.restore()
    for key, value in after_forward.items():
        assert torch.equal(model.state_dict()[key], value), key
