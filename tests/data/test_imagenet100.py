"""ImageNet-100 class list and the symlink-tree builder (function and CLI)."""

from __future__ import annotations

import io
import re
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from ssl_toolkit.data import ImageFolderData, imagenet100_classes, make_imagenet100

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_imagenet100.py"
EXTRA = ["n99999991", "n99999992", "n99999993"]


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, format="JPEG")  # a real image: empty files are skipped as bad
    for split in ("train", "val"):
        for wnid in imagenet100_classes() + EXTRA:
            (root / split / wnid).mkdir(parents=True)
            (root / split / wnid / f"{wnid}_0.JPEG").write_bytes(jpeg.getvalue())
    return root


def test_shipped_class_list() -> None:
    wnids = imagenet100_classes()
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)


def test_builds_symlink_tree(imagenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "imagenet100"
    assert make_imagenet100(imagenet, out) == 200
    for split in ("train", "val"):
        entries = sorted((out / split).iterdir())
        assert len(entries) == 100 and all(e.is_symlink() for e in entries)
        assert {e.name for e in entries} == set(imagenet100_classes())
        assert all(e.resolve() == (imagenet / split / e.name).resolve() for e in entries)
    data = ImageFolderData(str(out), num_workers=0)  # the tree is a valid image folder
    assert data.num_classes == 100 and data.num_train_samples == 100


def test_rerun_is_idempotent(imagenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "imagenet100"
    make_imagenet100(imagenet, out)
    assert make_imagenet100(imagenet, out) == 0
    (out / "val" / imagenet100_classes()[7]).unlink()
    assert make_imagenet100(imagenet, out) == 1


def test_missing_wnid(imagenet: Path, tmp_path: Path) -> None:
    wnid = imagenet100_classes()[3]
    (imagenet / "train" / wnid / f"{wnid}_0.JPEG").unlink()
    (imagenet / "train" / wnid).rmdir()
    with pytest.raises(FileNotFoundError, match=f"lacks 1 of 100 classes, e.g. {wnid}$"):
        make_imagenet100(imagenet, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is created


def test_flat_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "n00000001").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").touch()
    with pytest.raises(ValueError, match="val is flat"):
        make_imagenet100(tmp_path, tmp_path / "out")


def test_never_overwrites(imagenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "imagenet100"
    (out / "train" / imagenet100_classes()[0]).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="is not a symlink"):
        make_imagenet100(imagenet, out)
    assert len(list((out / "train").iterdir())) == 1 and not (out / "val").exists()


def test_custom_class_file_and_cli(imagenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(EXTRA) + "\n\n")
    out = tmp_path / "subset"
    argv = [str(TOOL), "--imagenet", str(imagenet), "--out", str(out), "--classes", str(classes)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(TOOL), run_name="__main__")
    assert sorted(p.name for p in (out / "val").iterdir()) == EXTRA
    classes.write_text("n99999991\nn99999991\n")
    with pytest.raises(ValueError, match="repeats \\['n99999991'\\]"):
        imagenet100_classes(classes)
