"""``ssl-toolkit export``: the backbone as safetensors that timm loads, never over an existing file."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import REPO, TINY_BACKBONE, tiny_recipe
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.recipe.build import build_parts
from ssl_toolkit.run.cli import main


def fake_run(tmp_path: Path, small_image_stem: bool = False) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as ``fit`` writes it (state_dict + resolved recipe) with non-initial weights."""
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path)
    recipe["backbone"]["small_image_stem"] = small_image_stem
    torch.manual_seed(0)
    module = build_parts(recipe).module
    with torch.no_grad():  # make the weights differ from any fresh init
        for p in module.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "run" / "checkpoints" / "epoch=0.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "recipe": recipe, "global_step": 7, "epoch": 0}, path)
    return path, module.backbone.eval()


def test_export_loads_in_timm_as_pretrained_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, backbone = fake_run(tmp_path)
    assert main(["export", str(ckpt)]) == 0
    out = tmp_path / "run" / "export" / "epoch=0.safetensors"
    assert f"written: {out.resolve()}" in capsys.readouterr().out
    overlay = {"file": str(out), "num_classes": 0}
    model = timm.create_model(TINY_BACKBONE, pretrained=True, pretrained_cfg_overlay=overlay)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), backbone(x))
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["model_name"] == TINY_BACKBONE and f.metadata()["step"] == "7"


def test_small_stem_export_loads_into_build_backbone(tmp_path: Path) -> None:
    ckpt, backbone = fake_run(tmp_path, small_image_stem=True)
    out = tmp_path / "b.safetensors"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    model = build_backbone(TINY_BACKBONE, small_image_stem=True)[0]
    model.load_state_dict(load_file(str(out)), strict=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), backbone(x))


def test_export_never_overwrites_and_reports_bad_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, _ = fake_run(tmp_path)
    out = tmp_path / "kept.safetensors"
    out.write_bytes(b"user data")
    assert main(["export", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and "exists" in err
    assert out.read_bytes() == b"user data"
    assert main(["export", str(ckpt), "--out", str(out), "--force"]) == 2  # --force replaces only an export
    assert "not an earlier export" in capsys.readouterr().err and out.read_bytes() == b"user data"
    out.unlink()
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    assert main(["export", str(ckpt), "--out", str(out), "--force"]) == 0
    assert load_file(str(out))

    # Weights that do not fit the recipe's backbone: refused before anything is written.
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("backbone.fc")}
    state["state_dict"]["backbone.conv1.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.ckpt"
    torch.save(state, broken)
    target = tmp_path / "never.safetensors"
    assert main(["export", str(broken), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "broken.ckpt" in err and "does not fit" in err and not target.exists()
    not_a_ckpt = tmp_path / "x.ckpt"
    not_a_ckpt.write_text("hello")
    assert main(["export", str(not_a_ckpt), "--out", str(target)]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err and not target.exists()


def test_export_refuses_pickled_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class Payload:  # unpickling this would call a function: weights_only refuses it
        def __reduce__(self) -> tuple:
            return (print, ("pickled code ran",))

    bomb = tmp_path / "bomb.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, bomb)
    target = tmp_path / "never.safetensors"
    assert main(["export", str(bomb), "--out", str(target)]) == 2
    out = capsys.readouterr()
    assert "refuses" in out.err and "pickled code ran" not in out.out and not target.exists()
