"""Bad input: bad files in image folders (odd modes converted, undecodable files skipped and
reported, a clear error above ``max_bad_fraction``; missing or empty datasets fail before training),
and settings that used to end in a traceback or a half-written run folder (one line, exit 2,
nothing written)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, tiny_recipe
from ssl_toolkit.data import ImageFolderData
from ssl_toolkit.data.image_files import check_file
from ssl_toolkit.data.image_folder import load_image
from ssl_toolkit.run.cli import main

S = 8  # decoded image side


def _jpeg(colour: tuple[int, ...], mode: str = "RGB", size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _rgba() -> Image.Image:  # transparent everywhere but an opaque blue centre
    image = Image.new("RGBA", (24, 24), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (8, 8, 16, 16))
    return image


GOOD = {
    "a/red.jpg": _jpeg((250, 10, 10)),
    "a/grey_l.png": _png(Image.new("L", (24, 24), 77)),
    "a/cmyk.jpg": _jpeg((0, 255, 255, 0), mode="CMYK"),  # pure red in CMYK
    "b/rgba.png": _png(_rgba()),
    "b/sixteen.png": _png(Image.fromarray(np.full((24, 24), 40000, dtype=np.uint16))),  # mode I;16
    "b/palette.png": _png(Image.new("RGB", (24, 24), (10, 200, 10)).convert("P", palette=Image.Palette.ADAPTIVE)),
    "b/green.JPEG": _jpeg((10, 250, 10)),
}
BAD = {
    "a/empty.jpg": (b"", "empty file"),
    "a/notes.png": (b"shopping list: milk, eggs\n", "not an image"),
    "b/truncated.jpg": (_jpeg((1, 2, 3), size=64)[:300], "corrupt"),
    "b/truncated.png": (_png(Image.new("RGB", (64, 64), (9, 9, 9)))[:60], "corrupt"),
}


def _tree(root: Path, bad: dict[str, tuple[bytes, str]]) -> Path:
    for split in ("train", "val"):
        for name, data in GOOD.items():
            (root / split / name).parent.mkdir(parents=True, exist_ok=True)
            (root / split / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (root / "train" / name).write_bytes(data)
    (root / "train" / "a" / "README.txt").write_text("not an image extension: ignored")
    return root


def test_odd_modes_are_converted_to_rgb_with_the_right_values(tmp_path: Path) -> None:
    _tree(tmp_path, {})
    pixel = {name: load_image(str(tmp_path / "train" / name), S, S)[:, S // 2, S // 2].tolist() for name in GOOD}
    assert pixel["a/grey_l.png"] == [77, 77, 77]
    assert pixel["b/sixteen.png"] == [round(40000 / 257)] * 3  # 16 bit scaled, not clipped to 255
    assert pixel["b/palette.png"] == [10, 200, 10]
    assert pixel["b/rgba.png"] == [0, 0, 255]
    assert load_image(str(tmp_path / "train" / "b/rgba.png"), S, S)[:, 0, 0].tolist() == [255, 255, 255]  # on white
    red = pixel["a/cmyk.jpg"]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15  # CMYK (0, 255, 255, 0) is red
    for name in GOOD:
        assert load_image(str(tmp_path / "train" / name), S, S).shape == (3, S, S)


@pytest.mark.parametrize(("name", "reason"), [(n, r) for n, (_, r) in BAD.items()])
def test_each_bad_file_is_recognised(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / "x" / Path(name).name
    path.parent.mkdir()
    path.write_bytes(BAD[name][0])
    mode, why = check_file(str(path))
    assert mode is None and why.startswith(reason)


def test_bad_files_are_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(tmp_path, BAD)
    data = ImageFolderData(str(tmp_path), image_size=S, batch_size=2, num_workers=0, max_bad_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="ssl_toolkit.data.image_folder"):
        data.setup()
    assert data.num_train_samples == len(GOOD) and len(data.val_set) == len(GOOD)
    skipped = {str(Path(p).relative_to(tmp_path / "train")): why for p, why in data.skipped}
    assert skipped.keys() == BAD.keys() and all(skipped[n].startswith(r) for n, (_, r) in BAD.items())
    text = caplog.text
    assert f"skipped {len(BAD)} of {len(GOOD) + len(BAD)} image files" in text
    assert all(name in text for name in BAD)
    assert "converted to RGB on load: 1 CMYK, 1 I;16, 1 L, 1 P, 1 RGBA" in text
    assert "ignored 1 files without an image extension" in text and "README.txt" in text
    images = torch.cat([batch[0] for batch in data.train_eval_dataloader()])
    assert images.shape == (len(GOOD), 3, S, S)


def test_too_many_bad_files_is_one_clear_error(tmp_path: Path) -> None:
    _tree(tmp_path, BAD)
    data = ImageFolderData(str(tmp_path), image_size=S, batch_size=2, num_workers=0)  # default 1%
    with pytest.raises(ValueError, match=r"^max_bad_fraction: 4 of 11 image files in .*train cannot be decoded "
                                         r"\(36\.4% > 1\.0%\): a/empty\.jpg \(empty file\), "):  # fmt: skip
        data.setup()


def test_file_broken_after_the_check_is_replaced_by_the_next_one(tmp_path: Path, caplog) -> None:
    _tree(tmp_path, {})
    data = ImageFolderData(str(tmp_path), image_size=S, batch_size=2, num_workers=0)
    data.setup()
    (tmp_path / "train" / "a" / "cmyk.jpg").write_bytes(b"\xff\xd8garbage")  # index 0 (sorted)
    with caplog.at_level(logging.WARNING, logger="ssl_toolkit.data.image_folder"):
        image, label, index = data.train_set[0]
    assert index == 1 and image.shape == (3, S, S) and "cmyk.jpg cannot be decoded" in caplog.text


def _fit_recipe(tmp_path: Path, root: Path, **data: object) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=2)
    recipe["data"] = {"name": "image_folder", "root": str(root), "image_size": 32, "batch_size": 2,
                      "num_workers": 0, **data}  # fmt: skip
    recipe["callbacks"] = {}
    path = tmp_path / "folder.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def test_fit_writes_the_skipped_files_into_the_run_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", BAD)
    assert main(["fit", str(_fit_recipe(tmp_path, root, max_bad_fraction=0.5))]) == 0
    lines = (tmp_path / "run" / "bad_files.txt").read_text().splitlines()
    assert [Path(line.split("\t")[0]).name for line in lines] == ["empty.jpg", "notes.png", "truncated.jpg",
                                                                  "truncated.png"]  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("bad", "data.max_bad_fraction: 4 of 11 image files in "),
        ("missing", "data.root: "),
        ("flat", "data.labels: folders, but "),  # class folders asked for, none there
        ("empty", "holds no images with extensions"),
    ],
)
def test_dataset_problems_fail_before_training_with_one_line(tmp_path, capsys, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "bad":
        _tree(root, BAD)
    elif layout == "flat":  # images straight in train/, no class folders
        (root / "train").mkdir(parents=True)
        (root / "val" / "a").mkdir(parents=True)
        (root / "train" / "x.jpg").write_bytes(GOOD["a/red.jpg"])
    elif layout == "empty":
        (root / "train" / "a").mkdir(parents=True)
        (root / "val" / "a").mkdir(parents=True)
    labels = {"labels": "folders"} if layout == "flat" else {}
    assert main(["fit", str(_fit_recipe(tmp_path, root, **labels))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: ") and message in err[0]
    assert not (tmp_path / "run").exists()  # nothing written


def _setting_recipe(tmp_path: Path, name: str = "simclr", **changes: dict) -> Path:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", tmp_path, steps=2)
    recipe["callbacks"] = {}
    for section, values in changes.items():
        recipe[section] = {**(recipe.get(section) or {}), **values}
    path = tmp_path / "r.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


# (recipe changes, overrides, the start of the message after "ssl-toolkit: error: ")
CASES = {
    "out_dir is a file": ({}, ["out_dir={tmp}/afile"], "out_dir: {tmp}/afile is a file"),
    "out_dir under a file": ({}, ["out_dir={tmp}/afile/run"], "out_dir: cannot create {tmp}/afile/run"),
    "wandb online without login": ({"logger": {"wandb": True, "wandb_mode": "online"}}, [],
                                   "logger.wandb_mode: online needs a wandb login"),
    "precision 64": ({}, ["trainer.precision=64"], "trainer.precision: 64"),
    "precision 64-true": ({}, ["trainer.precision=64-true"], "trainer.precision: 64-true"),
    "hydra classes_per_batch": ({"data": {"num_classes": 4, "classes_per_batch": 8}}, [],
                                "data.classes_per_batch: 8 classes per batch, but the data has 4 classes"),
    "monitor nobody logs": ({"callbacks": {"rankme": {"num_samples": 32},
                                           "rankme_checkpoint": {"monitor": "val/rank_me", "mode": "max"}}}, [],
                            "callbacks.rankme_checkpoint.monitor: 'val/rank_me' is logged by no enabled callback"),
    "monitor of a disabled callback": ({"callbacks": {"rankme_checkpoint": {"monitor": "val/rankme"}}}, [],
                                       "callbacks.rankme_checkpoint: monitors val/rankme but callbacks.rankme is off"),
    "nan lr": ({}, ["optimizer.lr=.nan"], "optimizer.lr: must be a finite number, got nan"),
    "inf temperature": ({}, ["head.loss.temperature=.inf"], "head.loss.temperature: must be a finite number"),
    "nan in a list": ({}, ["augment.crop_scale=[.nan,1.0]"], "augment.crop_scale: must be a finite number"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_is_one_line_exit_2_and_nothing_written(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    changes, overrides, message = CASES[case]
    name = "hydra" if "hydra" in case else "simclr"
    path = _setting_recipe(tmp_path, name, **changes)
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no stored login
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["fit", str(path), *(o.format(tmp=tmp_path) for o in overrides)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: " + message.format(tmp=tmp_path)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not (tmp_path / "run").exists()


def test_out_dir_in_a_folder_without_write_permission(tmp_path: Path, capsys) -> None:
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("this user (root) may write into read-only folders")
    assert main(["fit", str(_setting_recipe(tmp_path)), f"out_dir={tmp_path}/locked/run"]) == 2
    assert capsys.readouterr().err.startswith(f"ssl-toolkit: error: out_dir: cannot create {tmp_path}/locked/run")


def test_out_dir_that_cannot_be_created_is_one_line(tmp_path: Path, capsys) -> None:
    # /proc refuses new folders even to root (a traceback from the run lock before).
    assert main(["fit", str(_setting_recipe(tmp_path)), "out_dir=/proc/ssl_toolkit_test/run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: out_dir: cannot create /proc/ssl_toolkit_test"), err


def test_val_check_interval_beyond_the_epoch_is_one_line(tmp_path: Path, capsys) -> None:
    # 64 synthetic images in batches of 16: 4 batches per epoch; Lightning refuses 10 once the loaders exist.
    path = _setting_recipe(tmp_path)
    assert main(["fit", str(path), f"out_dir={tmp_path}/run", "trainer.val_check_interval=10"]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if x.startswith("ssl-toolkit: error:")]
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: trainer.val_check_interval: "), err
    assert "10" in err[0]


def test_recipes_lists_paths_that_fit_accepts(capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out.split()
    assert "recipes/fashion_mnist/simclr.yaml" in listed
    assert all((REPO / p).is_file() for p in listed), listed
