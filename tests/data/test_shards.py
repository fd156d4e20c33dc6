"""WebDatasetData: shards written by tools/write_shards.py, streamed without duplicates across
processes and loader workers, read back with the same pixels and labels, trained on end to end."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from two_processes import run_ranks

from conftest import REPO, tiny_recipe
from ssl_toolkit.data import ImageFolderData, WebDatasetData
from ssl_toolkit.data.shard_writer import write_shards
from ssl_toolkit.data.shards import EpochLoader
from ssl_toolkit.run.cli import main

sys.path.insert(0, str(REPO / "tools"))
import write_shards as write_shards_tool  # noqa: E402

WORKER = Path(__file__).with_name("shard_ranks_worker.py")


def _folder(root: Path, per_class: int = 5, val: int = 2) -> Path:
    """train/<class>/ and val/<class>/ of distinct random-block JPEGs (and one PNG)."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class), ("val", val)):
        for name in ("ant", "bée"):
            for i in range(count):
                blocks = torch.randint(0, 256, (3, 3, 3), generator=g, dtype=torch.uint8).numpy()
                image = Image.fromarray(blocks).resize((30 + i, 24), Image.Resampling.NEAREST)
                path = root / split / name / (f"im {i}.png" if i == 0 else f"im {i}.jpg")
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
    return root


def _plain_shards(tmp_path: Path, shards: int, per_shard: int) -> str:
    """``shards`` x ``per_shard`` tiny unlabelled JPEGs; returns the brace pattern."""
    files = []
    for k in range(shards * per_shard):
        path = tmp_path / "imgs" / f"{k}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (10, 10), (k, 0, 0)).save(path)
        files.append((str(path), -1))
    write_shards(files, str(tmp_path / "sh-%03d.tar"), per_shard)
    return str(tmp_path / f"sh-{{000..{shards - 1:03d}}}.tar")


def test_writer_round_trip_same_pixels_and_labels(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "photos")
    assert write_shards_tool.main([str(root), str(tmp_path / "shards"), "--shard-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "train: 10 samples in 4 shards" in printed and "val: 4 samples in 2 shards" in printed
    recipe = OmegaConf.create(printed.split("recipe:\n")[1])
    assert recipe.data.train_shards == f"{tmp_path / 'shards'}/train-{{000000..000003}}.tar"
    folder = ImageFolderData(str(root), image_size=16, batch_size=2, num_workers=0)
    shards = WebDatasetData(recipe.data.train_shards, recipe.data.val_shards, image_size=16, batch_size=2,
                            num_workers=0)  # fmt: skip
    assert shards.num_train_samples == 10 and shards.num_classes == 2 and shards.has_val
    folder.setup()
    for a, b in ((folder.train_set, shards.train_set), (folder.val_set, shards.val_set)):
        assert len(a) == len(b) and a.labels.tolist() == b.labels.tolist()
        for i in range(len(a)):
            assert torch.equal(a[i][0], b[i][0]) and a[i][1:] == b[i][1:]
    streamed = list(EpochLoader(shards, rank=0, world_size=1))
    assert len(streamed) == 5 and sorted(torch.cat([b[2] for b in streamed]).tolist()) == list(range(10))
    whole = folder.train_set.whole_images(folder.max_side)  # the folder's training images
    for images, labels, index, sizes in streamed:  # the stream decodes the same pixels as the folder
        assert images.dtype == torch.uint8 and images.shape[:2] == (2, 3) and labels.dtype == torch.int64
        for image, label, i, (h, w) in zip(images, labels, index.tolist(), sizes.tolist(), strict=True):
            assert torch.equal(image[:, :h, :w], whole[i][0]) and int(label) == folder.train_set.labels[i]
    assert write_shards_tool.main([str(root), str(tmp_path / "shards")]) == 2  # never over old shards


@pytest.mark.distributed
def test_two_processes_two_workers_see_each_sample_once_per_epoch(tmp_path: Path) -> None:
    pattern = _plain_shards(tmp_path, shards=8, per_shard=6)  # 48 samples, 4 consumers x 2 shards
    ranks = run_ranks(WORKER, tmp_path / "ranks", [pattern], timeout=180)
    assert [r["batches"] for r in ranks] == [8, 8]  # 48 // (2 x 3): equal steps on both processes
    for epoch in range(2):
        seen = ranks[0]["epochs"][epoch] + ranks[1]["epochs"][epoch]
        assert len(ranks[0]["epochs"][epoch]) == 24 and sorted(seen) == list(range(48))  # exactly once
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]  # a new shard order and shuffle each epoch


def test_order_depends_on_seed_and_epoch_only(tmp_path: Path, monkeypatch) -> None:
    pattern = _plain_shards(tmp_path, shards=4, per_shard=5)
    data = WebDatasetData(pattern, image_size=8, batch_size=4, num_workers=2, shuffle_buffer=8)

    def order(seed: int) -> list[list[int]]:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
        loader = data.train_dataloader()
        return [[int(i) for b in loader for i in b[2]] for _ in range(2)]

    first, again, other = order(0), order(0), order(1)
    assert first == again and first != other and first[0] != first[1]
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    data.trainer = SimpleNamespace(current_epoch=1)  # a run resumed at the end of epoch 0
    assert [int(i) for b in data.train_dataloader() for i in b[2]] == first[1]
    assert all(sorted(e) == sorted(set(e)) and len(e) == 20 for e in first)  # 20 // 4 = 5 batches, no repeats
    # batch 8: each worker hands over 8 then its last 2 (a short chunk); 20 // 8 = 2 batches, no repeats
    wide = WebDatasetData(pattern, image_size=8, batch_size=8, num_workers=2, shuffle_buffer=8)
    seen = [int(i) for b in wide.train_dataloader() for i in b[2]]
    assert len(seen) == 16 and len(set(seen)) == 16


def test_fsspec_urls_and_bad_shard_specs(tmp_path: Path) -> None:
    pattern = _plain_shards(tmp_path, shards=2, per_shard=3)
    memory = fsspec.filesystem("memory")
    for k in range(2):
        memory.pipe(f"/wds/sh-{k:03d}.tar", (tmp_path / f"sh-{k:03d}.tar").read_bytes())
    data = WebDatasetData("memory://wds/sh-{000..001}.tar", image_size=8, batch_size=2, num_workers=0)
    assert data.num_train_samples == 6 and data.num_classes == 0 and not data.has_labels
    assert sorted(int(i) for b in data.train_dataloader() for i in b[2]) == list(range(6))
    local = WebDatasetData(f"file://{pattern}", image_size=8, batch_size=2, num_workers=0)
    assert local.num_train_samples == 6
    with pytest.raises(FileNotFoundError, match=r"^train_shards: cannot open .*sh-009\.tar"):
        WebDatasetData(str(tmp_path / "sh-009.tar"), batch_size=2, num_workers=0).setup()
    (tmp_path / "junk.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(ValueError, match=r"^train_shards: .*junk\.tar is not a tar shard"):
        WebDatasetData(str(tmp_path / "junk.tar"), batch_size=2, num_workers=0).setup()
    with pytest.raises(ValueError, match="^num_workers: 4 loader workers need at least as many train shards, got 2"):
        WebDatasetData(pattern, num_workers=4)


def test_fit_on_shards_end_to_end(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", per_class=8, val=2)
    assert write_shards_tool.main([str(root), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=4)
    recipe["data"] = {"name": "webdataset", "train_shards": str(tmp_path / "shards" / "train-{000000..000003}.tar"),
                      "val_shards": str(tmp_path / "shards" / "val-000000.tar"), "image_size": 32,
                      "batch_size": 4, "num_workers": 2, "shuffle_buffer": 8}  # fmt: skip
    recipe["callbacks"] = {"knn": {"k": 5}, "rankme": {"num_samples": 16}}
    path = tmp_path / "shards.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # 16 samples / 4 per batch = one epoch of 4 steps
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "val/knn_top1" in metrics and "val/rankme" in metrics
