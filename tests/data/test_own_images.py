"""ImageFolderData on folders as users have them: flat or nested without classes, no val split,
any file name, EXIF orientation, symbolic link loops, empty class folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_toolkit.data import ImageFolderData
from ssl_toolkit.data.image_folder import load_image

LOG = "ssl_toolkit.data.image_folder"


def _jpeg(path: Path | bytes, colour: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        Image.new("RGB", size, colour).save(f, format="JPEG", quality=95)


def _colours(data: ImageFolderData, workers: int = 0) -> dict[str, tuple[list[int], int]]:
    """File name -> (mean RGB of its decoded image, label), read through the loader."""
    data.num_workers = workers
    out = {}
    for images, labels, index in data.train_eval_dataloader():
        for image, label, i in zip(images, labels, index, strict=True):
            name = os.path.basename(os.fsdecode(data.train_set.paths[int(i)]))
            out[name] = ([round(v) for v in image.float().mean((1, 2)).tolist()], int(label))
    return out


def _close(a: list[int], b: tuple[int, int, int]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 6


def test_flat_unlabelled_folder_without_val(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(5):
        _jpeg(tmp_path / "photos" / f"p{i}.jpg", (40 * i, 10, 200))
    with caplog.at_level(logging.WARNING, logger=LOG):
        data = ImageFolderData(str(tmp_path / "photos"), image_size=8, batch_size=2, num_workers=0)
    assert data.labels == "none" and data.num_classes == 0
    assert f"labels=none: every image under {tmp_path / 'photos'}, label -1; no held-out split" in caplog.text
    assert data.num_train_samples == 5 and not data.has_val and not data.has_labels
    assert data.labelled_data() is None
    seen = _colours(data)
    assert sorted(seen) == [f"p{i}.jpg" for i in range(5)]
    assert all(label == -1 and _close(rgb, (40 * int(n[1]), 10, 200)) for n, (rgb, label) in seen.items())
    images, labels, _, sizes = next(iter(data.train_dataloader()))  # whole images for the training views
    assert images.shape[:2] == (2, 3) and sizes.tolist() == [[20, 24]] * 2 and labels.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="^val_dir: ImageFolderData has no held-out split"):
        data.heldout_dataloader()


def test_nested_unlabelled_and_the_auto_choice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _jpeg(tmp_path / "a.jpg", (1, 2, 3))  # an image at the top: no class structure
    _jpeg(tmp_path / "2019" / "summer" / "b.jpg", (1, 2, 3))
    _jpeg(tmp_path / "2020" / "c.jpg", (1, 2, 3))
    assert ImageFolderData(str(tmp_path), image_size=8, batch_size=2).labels == "none"
    data = ImageFolderData(str(tmp_path), image_size=8, batch_size=2, num_workers=0)
    assert data.num_train_samples == 3 and data.train_set.labels.tolist() == [-1, -1, -1]
    (tmp_path / "a.jpg").unlink()  # now only sub-folders: read as classes, unless labels=none
    with caplog.at_level(logging.WARNING, logger=LOG):
        auto = ImageFolderData(str(tmp_path), image_size=8, batch_size=1, num_workers=0)
    assert auto.labels == "folders" and auto.classes == ["2019", "2020"]
    assert f"labels=folders: 2 class folders in {tmp_path}; no held-out split" in caplog.text
    assert auto.train_set is None and auto.num_train_samples == 2 and auto.train_set.labels.tolist() == [0, 1]
    assert auto.has_labels and auto.labelled_data() is None  # labels but nothing held out to score on
    none = ImageFolderData(str(tmp_path), image_size=8, batch_size=1, num_workers=0, labels="none")
    assert none.num_classes == 0 and none.train_labels().tolist() == [-1, -1]


def test_class_folders_without_val_split_and_empty_class(tmp_path: Path, caplog) -> None:
    _jpeg(tmp_path / "train" / "cat" / "c.jpg", (250, 5, 5))
    _jpeg(tmp_path / "train" / "dog" / "d.jpg", (5, 5, 250))
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "train" / "emu" / "notes.txt").write_text("no images here")
    with caplog.at_level(logging.WARNING, logger=LOG):
        data = ImageFolderData(str(tmp_path), image_size=8, batch_size=1, num_workers=0)
        assert data.num_train_samples == 2
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3 and not data.has_val
    assert "labels=folders: 3 class folders in train/ of" in caplog.text
    assert "1 class folders hold no usable image (still counted as classes): emu" in caplog.text
    assert ImageFolderData(str(tmp_path), val_dir=None, labels="folders").val_path is None


def test_unlabelled_root_with_a_val_folder_beside(tmp_path: Path) -> None:
    _jpeg(tmp_path / "x.jpg", (9, 9, 9))
    _jpeg(tmp_path / "val" / "y.jpg", (9, 9, 9))
    data = ImageFolderData(str(tmp_path), image_size=8, batch_size=1, num_workers=0)
    data.setup()
    assert len(data.train_set) == 1 and len(data.val_set) == 1  # val is not read as training data


def test_any_file_name_and_a_non_ascii_root(tmp_path: Path) -> None:
    root = tmp_path / "ünï data"
    colours = {"café.jpg": (250, 10, 10), "with space.jpg": (10, 250, 10), "日本.jpeg": (10, 10, 250)}
    for name, colour in colours.items():
        _jpeg(root / "train" / "ça" / name, colour)
    bad_name = os.fsencode(root / "train" / "ça") + b"/latin1_\xe9\xff.jpg"  # not valid UTF-8
    _jpeg(bad_name, (200, 200, 10))
    data = ImageFolderData(str(root), image_size=8, batch_size=2, num_workers=0)
    assert data.num_train_samples == 4
    for workers in (0, 1):
        seen = _colours(data, workers)
        assert len(seen) == 4 and all(label == 0 for _, label in seen.values())
        for name, colour in colours.items():
            assert _close(seen[name][0], colour)
        assert _close(seen[os.fsdecode(b"latin1_\xe9\xff.jpg")][0], (200, 200, 10))


def _oriented(size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 with four distinct flat quadrants and a wide stripe: every rotation differs."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (230, 20, 20)
    a[: h // 2, w // 2 :] = (20, 230, 20)
    a[h // 2 :, : w // 2] = (20, 20, 230)
    a[h // 2 :, w // 2 :] = (230, 230, 20)
    return a


@pytest.mark.parametrize("size", [(48, 32), (640, 480)])  # the second one is decoded in draft mode
def test_exif_orientation_6_decodes_upright(tmp_path: Path, size: tuple[int, int]) -> None:
    stored = _oriented(size)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    upright = np.rot90(stored, k=-1).copy()  # clockwise quarter turn, by numpy
    Image.fromarray(upright).save(tmp_path / "upright.png")
    Image.fromarray(stored).save(tmp_path / "as_stored.png")
    for s, r in ((16, 16), (16, 24)):
        got = load_image(str(tmp_path / "phone.jpg"), s, r).float()
        want = load_image(str(tmp_path / "upright.png"), s, r).float()
        sideways = load_image(str(tmp_path / "as_stored.png"), s, r).float()
        assert (got - want).abs().mean() < 8
        assert (got - sideways).abs().mean() > 40  # what ignoring the tag gives: the check can fail


def test_symlink_loop_and_double_links_read_each_real_file_once(tmp_path: Path, caplog) -> None:
    root = tmp_path / "data"
    for i in range(3):
        _jpeg(root / "train" / "cat" / f"c{i}.jpg", (250, 10, 10))
        _jpeg(root / "train" / "dog" / f"d{i}.jpg", (10, 10, 250))
    outside = tmp_path / "elsewhere"
    _jpeg(outside / "o.jpg", (250, 10, 10))
    (root / "train" / "cat" / "loop").symlink_to("..")  # train/cat/loop -> train/
    (root / "train" / "cat" / "more1").symlink_to(outside)
    (root / "train" / "cat" / "more2").symlink_to(outside)  # two links to one place
    (root / "train" / "dog" / "again.jpg").symlink_to(root / "train" / "dog" / "d0.jpg")
    (root / "train" / "dog" / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    with caplog.at_level(logging.WARNING, logger=LOG):
        data = ImageFolderData(str(root), image_size=8, batch_size=2, num_workers=0, max_bad_fraction=0.5)
        assert data.num_train_samples == 7  # 3 cat + 1 through more1 + 3 dog
    seen = _colours(data)
    assert sorted(seen) == ["c0.jpg", "c1.jpg", "c2.jpg", "d0.jpg", "d1.jpg", "d2.jpg", "o.jpg"]
    for name, (rgb, label) in seen.items():
        assert label == (0 if name[0] in "co" else 1) and _close(rgb, (250, 10, 10) if label == 0 else (10, 10, 250))
    assert "3 symbolic links lead to folders or files already read; each is read once, skipped: " in caplog.text
    assert "cat/loop, cat/more2, dog/again.jpg" in caplog.text
    assert data.skipped == [(str(root / "train" / "dog" / "broken.jpg"), "broken link")]
