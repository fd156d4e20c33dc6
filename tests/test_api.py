"""The Python API (``ssl_toolkit.__all__``): a backbone loads from a checkpoint whose data is gone and
equals the exported one in timm; ``fit`` from Python is the run ``ssl-toolkit fit`` trains; bad
input raises the one-line ``UserError``; every public name is documented with an example."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from PIL import Image

import ssl_toolkit
from conftest import REPO
from ssl_toolkit import UserError, fit, load_backbone, load_run
from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.losses import LOSSES
from ssl_toolkit.run.export import export_backbone

TINY = REPO / "recipes" / "tiny" / "simclr.yaml"
CLI = Path(sys.executable).with_name("ssl-toolkit")


def photos(folder: Path, count: int = 16) -> Path:
    """``count`` distinct JPEGs of random colour blocks, 40 x 30 px (not the training size)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        blocks = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((40, 30), Image.Resampling.NEAREST).save(folder / f"{i:03d}.jpg", quality=90)
    return folder


def csv_losses(run_dir: Path) -> list[float]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def recipe_file(path: Path, base: Path = TINY, **sections: dict) -> Path:
    """``base`` with whole sections replaced, written to ``path``."""
    recipe = OmegaConf.to_container(OmegaConf.load(base))
    path.write_text(OmegaConf.to_yaml({**recipe, **sections}))
    return path


def images_folder_run(tmp_path: Path, backbone: str = "test_resnet", overrides: tuple[str, ...] = ()) -> Path:
    """Two SimCLR steps on a folder of JPEGs (``tmp_path/photos``) with ``backbone``; the checkpoint."""
    data = {
        "name": "image_folder",
        "root": str(photos(tmp_path / "photos")),
        "image_size": 32,
        "batch_size": 8,
        "num_workers": 0,
    }
    recipe = recipe_file(tmp_path / "photos.yaml", data=data)
    result = fit(recipe, [f"backbone.name={backbone}", f"out_dir={tmp_path / 'run'}", *overrides])
    assert result.steps == 2 and result.checkpoint is not None
    return result.checkpoint


def test_backbone_loads_without_its_data_and_equals_the_export_in_timm(tmp_path: Path) -> None:
    ckpt = images_folder_run(tmp_path)
    exported = export_backbone(ckpt, tmp_path / "backbone.safetensors").path
    shutil.rmtree(tmp_path / "photos")  # as when a checkpoint is copied from the cluster to a laptop
    with pytest.raises(CheckpointError, match=r"backbone\.safetensors is a safetensors file .*timm\.create_model"):
        load_backbone(exported)  # the export given where the checkpoint belongs
    with pytest.raises(RecipeError, match=r"^data\.root: .*photos does not exist$"):
        load_run(ckpt, with_data=True)  # the data is gone: the full run with data says so in one line

    backbone = load_backbone(ckpt)
    overlay = {"file": str(exported), "num_classes": 0}
    timm_model = timm.create_model("test_resnet", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = backbone.model(x), timm_model(x)
    assert ours.shape == (4, backbone.feature_dim) == (4, 96)
    assert torch.equal(ours, theirs)
    assert not backbone.model.training
    # The trained weights, not a fresh initialization: exactly the checkpoint's backbone.* tensors.
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, state[f"backbone.{key}"]), key
    # embed = model(preprocess(uint8)): resize to the training size and normalize as in evaluation.
    images = torch.randint(0, 256, (3, 3, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    resized = torch.nn.functional.interpolate(images.float() / 255, size=(32, 32), mode="bilinear", antialias=True)
    by_hand = timm_model((resized - mean[:, None, None]) / std[:, None, None])
    torch.testing.assert_close(backbone.embed(images), by_hand.detach())

    run = load_run(ckpt)  # the whole module, still without the data
    assert run.datamodule is None and run.step == 2 and not run.module.training
    torch.testing.assert_close(run.module.embed(images), by_hand.detach())
    moved = photos(tmp_path / "elsewhere")  # the data found again at another place
    with_data = load_run(ckpt, data_root=moved)
    assert with_data.datamodule is not None and with_data.datamodule.num_train_samples == 16


def test_a_moved_vit_checkpoint_loads_with_its_timm_kwargs(tmp_path: Path) -> None:
    # A fixed-size model (timm's test_vit is built for 160 px) trained at 32 px, its run folder moved.
    ckpt = images_folder_run(tmp_path, "test_vit", ["augment.mean=[0.5,0.4,0.3]", "augment.std=[0.25,0.2,0.3]"])
    shutil.move(tmp_path / "run", tmp_path / "laptop")
    shutil.rmtree(tmp_path / "photos")
    moved = tmp_path / "laptop" / "checkpoints" / ckpt.name
    backbone = load_backbone(moved)
    assert backbone.name == "test_vit" and backbone.timm_kwargs == {"img_size": 32}
    exported = export_backbone(moved, tmp_path / "vit.safetensors").path
    overlay = {"file": str(exported), "num_classes": 0}
    timm_model = timm.create_model("test_vit", pretrained=True, pretrained_cfg_overlay=overlay, img_size=32).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = timm_model(backbone.preprocess(images))
    assert torch.equal(backbone.embed(images), expected) and expected.shape == (2, backbone.feature_dim)
    # timm's own preprocessing of PIL images follows the training's size, mean and std, not timm's
    # defaults for test_vit (160 px, ImageNet statistics).
    config = timm.data.resolve_model_data_config(backbone.model)
    assert (
        config["input_size"] == (3, 32, 32) and config["mean"] == (0.5, 0.4, 0.3) and config["std"] == (0.25, 0.2, 0.3)
    )
    transform = timm.data.create_transform(**config)
    pil = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    torch.testing.assert_close(torch.stack([transform(p) for p in pil]), backbone.preprocess(images))


@pytest.mark.slow  # a second process that imports torch and Lightning
def test_fit_from_python_is_the_run_the_cli_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["seed=3", "head.loss.temperature=0.3", "data.batch_size=8", "out_dir=runs/same"]
    (tmp_path / "py").mkdir()
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "py")
    result = fit(str(TINY), overrides)
    # One thread in both processes (the tests run with one): a different thread count may sum in
    # another order, which torch does not promise to round the same.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    cli = subprocess.run([str(CLI), "fit", str(TINY), *overrides], cwd=tmp_path / "cli", capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    py_run, cli_run = tmp_path / "py" / "runs" / "same", tmp_path / "cli" / "runs" / "same"
    assert result.run_dir.resolve() == py_run and result.steps == 4

    # The same final loss to the last digit, and the same loss at every step.
    assert csv_losses(cli_run) == csv_losses(py_run) and len(csv_losses(py_run)) == 4
    assert result.final_loss == csv_losses(cli_run)[-1]
    assert f"final train/loss: {result.final_loss:.4f} after 4 steps" in cli.stdout
    assert sorted(result.val_metrics) == ["val/rankme", "val/rankme_proj"]
    for key, value in result.val_metrics.items():
        assert f"{key + ':':<18}{value:.4f}" in cli.stdout
    # The same weights, and run.json records the same command.
    py_state = torch.load(py_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    cli_state = torch.load(cli_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert py_state.keys() == cli_state.keys() and all(torch.equal(py_state[k], cli_state[k]) for k in py_state)
    commands = [json.loads((run / "run.json").read_text())["command"] for run in (py_run, cli_run)]
    assert commands[0] == commands[1] == ["ssl-toolkit", "fit", str(TINY), *overrides]


def test_bad_input_raises_the_one_line_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("my notes")
    missing, nope = tmp_path / "missing.ckpt", tmp_path / "nope.yaml"
    cases = [
        (lambda: load_backbone(missing), CheckpointError, f"checkpoint: {missing} does not exist"),
        (lambda: load_backbone(not_a_checkpoint), CheckpointError, f"checkpoint: {not_a_checkpoint} is not a PyTorch"),
        (lambda: load_run(tmp_path), CheckpointError, f"checkpoint: {tmp_path} is a folder, not a checkpoint file"),
        (lambda: fit(TINY, ["head.loss.temprature=0.1"]), RecipeError, "head.loss.temprature: unknown key (known: t"),
        (lambda: fit(TINY, ["trainer.max_step=3"]), RecipeError, "trainer.max_step: unknown key"),
        (lambda: fit(TINY, "seed=1"), RecipeError, "overrides: expected a list of 'key=value' strings, got 'seed=1'"),
        (lambda: fit(nope), RecipeError, f"recipe: {nope} does not exist"),
    ]  # fmt: skip
    for call, kind, message in cases:
        with pytest.raises(kind) as info:
            call()
        assert isinstance(info.value, UserError) and "\n" not in str(info.value)
        assert str(info.value).startswith(message), (str(info.value), message)
    assert not_a_checkpoint.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.ckpt"]  # nothing written by the failed fits


def test_hydra_needs_its_data_to_rebuild_the_head(tmp_path: Path) -> None:
    # Hydra's head is sized by the data's number of classes: without the data it says so.
    tiny = OmegaConf.load(TINY)
    hydra = recipe_file(tmp_path / "hydra.yaml", REPO / "recipes" / "fashion_mnist" / "hydra.yaml",
                        backbone={"name": "test_resnet"}, data=OmegaConf.to_container(tiny.data),
                        trainer={**OmegaConf.to_container(tiny.trainer), "max_steps": 1}, callbacks={},
                        logger={"csv": True, "wandb": False})  # fmt: skip
    result = fit(hydra, ["augment.size=32", f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(RecipeError, match=r"^head\.name: 'hydra' needs the data's number of classes"):
        load_run(result.checkpoint)
    assert load_run(result.checkpoint, with_data=True).module.head.num_classes == 4
    assert load_backbone(result.checkpoint).feature_dim == 96  # the backbone alone needs no data


def test_all_names_are_exported_documented_and_lazy() -> None:
    assert ssl_toolkit.__all__ == list(ssl_toolkit._EXPORTS)
    losses = {cls.__name__ for cls in LOSSES.values()}
    assert losses <= set(ssl_toolkit.__all__), losses - set(ssl_toolkit.__all__)
    package_examples = [line for line in ssl_toolkit.__doc__.splitlines() if line.strip().startswith(">>>")]
    for name in ssl_toolkit.__all__:
        value = getattr(ssl_toolkit, name)
        if isinstance(value, dict):  # a registry: shown in the package docstring's examples
            assert any(name in line for line in package_examples), name
        else:
            assert ">>>" in (value.__doc__ or ""), f"{name} has no example in its docstring"
    with pytest.raises(AttributeError, match="has no attribute 'load_checkpoint'"):
        ssl_toolkit.load_checkpoint  # noqa: B018
