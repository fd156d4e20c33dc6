"""FileListData: text/CSV lists of paths relative to a root, with or without labels."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssl_toolkit.data import FileListData

COLOURS = {"cat": (240, 10, 10), "dog": (10, 10, 240)}


def _images(root: Path) -> list[str]:
    names = []
    for i in range(6):
        name = ("cat" if i % 2 == 0 else "dog") + f"/img, {i}.jpg"  # a comma in the name: CSV quoting
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 16), COLOURS[name[:3]]).save(root / name, quality=95)
        names.append(name)
    return names


def _read_all(data: FileListData) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(data.train_eval_dataloader())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_csv_with_class_names_and_a_val_list(tmp_path: Path, caplog) -> None:
    names = _images(tmp_path / "imgs")
    rows = "".join(f'"{n}",{n[:3]}\n' for n in names)
    (tmp_path / "train.csv").write_text("path,label\n" + rows)
    (tmp_path / "val.csv").write_text(f'"{names[1]}",dog\n')
    with caplog.at_level(logging.WARNING, logger="ssl_toolkit.data.file_list"):
        data = FileListData(str(tmp_path / "imgs"), str(tmp_path / "train.csv"), str(tmp_path / "val.csv"),
                            image_size=8, batch_size=2, num_workers=0)  # fmt: skip
    assert "file_list: labels=column: 2 classes in" in caplog.text and "held-out split" in caplog.text
    assert data.classes == ["cat", "dog"] and data.num_classes == 2 and data.num_train_samples == 6
    images, labels = _read_all(data)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert all(int(img.float().mean((1, 2)).argmax()) == (0 if y == 0 else 2) for img, y in zip(images, labels))
    _, val_labels, _ = next(iter(data.val_dataloader()))
    assert val_labels.tolist() == [1] and data.labelled_data() is data


def test_text_list_without_labels_and_integer_labels(tmp_path: Path) -> None:
    names = _images(tmp_path)
    (tmp_path / "all.txt").write_text("# my curated subset\n\n" + "\n".join(names[:4]) + "\n")
    data = FileListData(str(tmp_path), str(tmp_path / "all.txt"), image_size=8, batch_size=2, num_workers=0)
    assert data.labels == "none" and data.num_classes == 0 and data.labelled_data() is None
    assert _read_all(data)[1].tolist() == [-1] * 4 and not data.has_val
    (tmp_path / "int.tsv").write_text("".join(f"{n}\t{3 * (i % 2)}\n" for i, n in enumerate(names)))
    data = FileListData(str(tmp_path), str(tmp_path / "int.tsv"), image_size=8, batch_size=2, num_workers=0)
    assert data.num_classes == 4 and _read_all(data)[1].tolist() == [0, 3, 0, 3, 0, 3]
    none = FileListData(str(tmp_path), str(tmp_path / "int.tsv"), labels="none", batch_size=2, num_workers=0)
    assert none.train_labels().tolist() == [-1] * 6


def test_missing_and_broken_files_are_reported_like_bad_files(tmp_path: Path, caplog) -> None:
    names = _images(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    bad_name = os.fsencode(tmp_path) + b"/caf\xe9.jpg"  # a latin-1 name, not UTF-8, listed as its bytes
    with open(bad_name, "wb") as f:
        Image.new("RGB", (20, 16), (9, 200, 9)).save(f, format="JPEG")
    listing = "\n".join([*names, "gone/missing.jpg", "broken.jpg"]).encode() + b"\ncaf\xe9.jpg\n"
    (tmp_path / "list.txt").write_bytes(listing)
    with caplog.at_level(logging.WARNING, logger="ssl_toolkit.data.image_folder"):
        data = FileListData(str(tmp_path), str(tmp_path / "list.txt"), image_size=8, batch_size=2, num_workers=0,
                            max_bad_fraction=0.3)  # fmt: skip
        assert data.num_train_samples == 7
    assert [(os.path.relpath(p, tmp_path), why[:7]) for p, why in data.skipped] == [
        ("gone/missing.jpg", "missing"), ("broken.jpg", "not an ")]  # fmt: skip
    assert (
        "file_list: " in caplog.text
        and "skipped 2 of 9 image files: gone/missing.jpg (missing), broken.jpg" in caplog.text
    )
    assert _read_all(data)[0][-1].float().mean((1, 2)).argmax() == 1  # the non-UTF-8 name was read
    strict = FileListData(str(tmp_path), str(tmp_path / "list.txt"), image_size=8, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"^max_bad_fraction: 2 of 9 files listed in .*list\.txt are missing"):
        strict.setup()


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("a.jpg,1,extra\n", {}, r"^train_list: .*t\.csv line 1: expected path or path','label"),
        ("a.jpg,1\nb.jpg\n", {"labels": "column"}, "^labels: column, but .* has rows without a label"),
        ("", {}, "^train_list: .* lists no images"),
        ("a.jpg,x\n", {"val_list": "v.csv"}, r"^val_list: .*v\.csv has labels not in the train list: \['y'\]"),
        ("a.jpg,1\n", {"labels": "yes"}, "^labels: expected auto, column or none"),
    ],
)
def test_bad_lists_are_one_line_errors(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    (tmp_path / "t.csv").write_text(content)
    (tmp_path / "v.csv").write_text("a.jpg,y\n")
    if "val_list" in kwargs:
        kwargs["val_list"] = str(tmp_path / kwargs["val_list"])
    with pytest.raises(ValueError, match=message):
        FileListData(str(tmp_path), str(tmp_path / "t.csv"), **kwargs)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"^train_list: {tmp_path / 'nope.txt'} does not exist$"):
        FileListData(str(tmp_path), str(tmp_path / "nope.txt"))
