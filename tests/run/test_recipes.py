"""Every shipped recipe builds; bad recipes fail with one line naming the key or file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, TINY_BACKBONE, narrow_head, tiny_recipe
from ssl_toolkit.errors import RecipeError
from ssl_toolkit.recipe.build import build_parts, build_trainer, load_recipe

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
DEMO = REPO / "recipes" / "fashion_mnist" / "simclr.yaml"


def make_image_folder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n0000000{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40 + i, 36), (40 * c, 10 * i, 90)).save(d / f"img{i}.JPEG")
    return root


def test_recipes_exist() -> None:
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {"fashion_mnist/simclr.yaml", "imagenet100/simclr.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_every_recipe_builds_with_a_tiny_backbone(path: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(path, tmp_path, keep_data=True)
    narrow_head(recipe["head"])  # every key still reaches its constructor; 64 wide, not 8,192
    if recipe["data"]["name"] == "image_folder":
        recipe["data"].update(root=str(make_image_folder(tmp_path / "in100")), image_size=32,
                              resize_size=36, batch_size=4, num_workers=0)  # fmt: skip
    elif recipe["data"]["name"] == "fashion_mnist":
        recipe["data"].update(train_samples=64, val_samples=32, batch_size=16, num_workers=0)
    if recipe["data"].get("classes_per_batch"):  # P x K class-balanced batches that fit the tiny data
        recipe["data"]["classes_per_batch"] = 2
    loss = recipe["head"].get("loss")
    if isinstance(loss, dict) and "top_k_negatives" in loss:  # GroCo: fewer hard negatives than images
        loss["top_k_negatives"] = min(loss["top_k_negatives"], recipe["data"]["batch_size"] - 1)
    parts = build_parts(recipe)
    trainer = build_trainer(recipe, tmp_path)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    assert trainer.global_step == 2
    assert parts.module.backbone.default_cfg["architecture"] == TINY_BACKBONE


def test_imagenet100_recipe_is_the_reference_setting() -> None:
    r = load_recipe(REPO / "recipes" / "imagenet100" / "simclr.yaml")
    assert r["backbone"]["name"] == "resnet18" and r["trainer"]["max_epochs"] == 400
    # solo-learn's simclr.sh (f25dc1f): 512 -> 2048 -> 128 without BN (tests/run/test_recipe_sources.py: every key)
    assert r["head"]["hidden_dim"] == 2048 and r["head"]["out_dim"] == 128 and not r["head"]["batch_norm"]
    assert r["head"]["loss"] == {"name": "ntxent", "temperature": 0.2}
    assert r["optimizer"]["name"] == "lars" and r["optimizer"]["lr"] == 0.3
    assert r["data"]["batch_size"] * r["trainer"]["devices"] == 256


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["head.temprature=0.1"], "head.temprature: unknown key"),
        (["head.loss.temprature=0.1"], "head.loss.temprature: unknown key"),
        (["data.batch_size=abc"], "data.batch_size: expected int, got str 'abc'"),
        (["optimizer.lr=fast"], "optimizer.lr: expected float"),
        (["augment.crop_scale=0.5"], "augment.crop_scale: expected"),
        (["trainer.max_epochs=many"], "trainer.max_epochs: expected"),
        (["trainer.max_epohcs=3"], "trainer.max_epohcs: unknown key"),
        (["trainer.logger=false"], "trainer.logger: set by ssl-toolkit"),
        (["head.name=simclrr"], "head.name: unknown 'simclrr'"),
        (["optimizer.name=adam"], "optimizer.name: unknown 'adam'"),
        (["extra_section=1"], "extra_section: unknown section"),
        (["logger.wandb_mode=sometimes"], "logger.wandb_mode: expected"),
        (["callbacks.early_stop={}"], "callbacks.early_stop.name: unknown"),
        (["noequals"], "override 'noequals': expected key=value"),
    ],
)
def test_bad_recipe_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(DEMO, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_values_checked_by_constructors_name_the_key(tmp_path: Path) -> None:
    for overrides, message in [
        ([f"data.root={tmp_path / 'nowhere'}"], f"data.root: {tmp_path / 'nowhere'}"),
        (["optimizer.lr=-0.1"], "optimizer.lr: must be > 0"),
        (["head.loss.temperature=0"], "head.loss.temperature: must be > 0"),
        (["backbone.name=resnet_nope"], "backbone.name: unknown timm model"),
        (["data.train_samples=100"], "data.batch_size: 128 is larger than the 100 training images"),
    ]:
        small = ["data.train_samples=512", "data.val_samples=128"]  # not 70,000 images resized per case
        with pytest.raises(RecipeError) as err:
            build_parts(load_recipe(DEMO, [*small, *overrides]))
        assert message in str(err.value), overrides


def test_missing_and_broken_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe: .*nope.yaml does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("head: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("backbone: {name: test_resnet}\n")
    with pytest.raises(RecipeError, match="head: missing section"):
        load_recipe(partial)
