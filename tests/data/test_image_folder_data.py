"""ImageFolderData on a tiny generated ImageNet-like tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ssl_toolkit.data import ImageFolderData
from ssl_toolkit.data.image_folder import load_image

COLOURS = {"ant": (220, 30, 30), "bee": (30, 220, 30), "cow": (30, 30, 220)}  # class index 0, 1, 2
SIZES = [(40, 30), (30, 52), (64, 64), (300, 200)]  # (width, height); the last one exercises draft()


def _write(path: Path, size: tuple[int, int], colour: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour).convert(mode)
    image.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet_like")
    for name, colour in COLOURS.items():
        for i, size in enumerate(SIZES):
            suffix = [".JPEG", ".png", ".jpg", ".jpeg"][i]
            _write(root / "train" / name / f"{name}_{i}{suffix}", size, colour)
        _write(root / "val" / name / f"v_{name}.PNG", (48, 36), colour)
    _write(root / "train" / "bee" / "gray.jpg", (33, 45), (128, 128, 128), mode="L")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / ".cache").mkdir()  # hidden folders are not classes
    return root


def test_batches_and_labels(root: Path) -> None:
    data = ImageFolderData(str(root), image_size=16, batch_size=4, num_workers=0)
    assert data.num_classes == 3 and data.num_train_samples == 13
    images, labels, index = next(iter(data.train_eval_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and index.dtype == torch.int64
    for images, labels, _ in data.train_eval_dataloader():
        for image, label in zip(images, labels, strict=True):
            pixel = image.float().mean((1, 2))
            if pixel.std() < 1:  # the grayscale image, in the "bee" folder
                assert label == 1
            else:  # the dominant channel identifies the class folder
                assert pixel.argmax() == label
    assert len(data.train_dataloader()) == 13 // 4


def test_val_uses_train_mapping(tmp_path: Path) -> None:
    for name in COLOURS:
        _write(tmp_path / "train" / name / "a.jpg", (20, 20), COLOURS[name])
    _write(tmp_path / "val" / "cow" / "b.png", (20, 24), COLOURS["cow"])  # val has only a subset
    data = ImageFolderData(str(tmp_path), image_size=8, batch_size=2, num_workers=0)
    images, labels, index = next(iter(data.val_dataloader()))
    assert labels.tolist() == [2] and index.tolist() == [0] and images.shape == (1, 3, 8, 8)


def test_workers_and_resize_size(root: Path) -> None:
    data = ImageFolderData(str(root), image_size=16, batch_size=2, num_workers=1, resize_size=20)
    images, labels, _ = next(iter(data.val_dataloader()))
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [0, 1]


def test_center_crop_of_shorter_side(tmp_path: Path) -> None:
    image = Image.new("RGB", (96, 32), (0, 0, 0))
    image.paste((255, 255, 255), (32, 0, 64, 32))  # white middle third
    image.save(tmp_path / "wide.png")
    out = load_image(str(tmp_path / "wide.png"), image_size=32, resize_size=32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, :, 2:-2].min() > 200  # only the centre square survives


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"^root: {tmp_path / 'x'} does not exist$"):
        ImageFolderData(str(tmp_path / "x"))


def test_class_folders_asked_for_but_absent(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    _write(tmp_path / "train" / "flat.jpg", (8, 8), (0, 0, 0))
    with pytest.raises(FileNotFoundError, match=f"^labels: folders, but {tmp_path / 'train'} has no class sub-folders"):
        ImageFolderData(str(tmp_path), labels="folders")


def test_named_split_folders_must_exist(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "a" / "x.jpg", (8, 8), (0, 0, 0))
    with pytest.raises(FileNotFoundError, match=f"^val_dir: {tmp_path / 'held_out'} does not exist"):
        ImageFolderData(str(tmp_path), val_dir="held_out")
    with pytest.raises(FileNotFoundError, match=f"^train_dir: {tmp_path / 'tr'} does not exist"):
        ImageFolderData(str(tmp_path), train_dir="tr")


def test_val_class_not_in_train(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "a" / "x.jpg", (8, 8), (0, 0, 0))
    _write(tmp_path / "val" / "zebra" / "x.jpg", (8, 8), (0, 0, 0))
    with pytest.raises(ValueError, match="classes not in the train split: \\['zebra'\\]"):
        ImageFolderData(str(tmp_path))


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    data = ImageFolderData(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no images"):
        data.setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "^batch_size: must be an int >= 1, got 0"),
        ({"image_size": 32, "resize_size": 16}, "^resize_size: 16"),
    ],
)
def test_invalid_arguments(root: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageFolderData(str(root), **kwargs)
