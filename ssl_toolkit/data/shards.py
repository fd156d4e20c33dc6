"""WebDataset tar shards, streamed from local paths or any fsspec URL (data that outgrows a folder).

A shard is a tar file whose members are grouped into samples by their name up to the first dot
(``000123.jpg`` + ``000123.cls``): the format timm and OpenCLIP read, written by
``tools/write_shards.py``. Training streams whole shards (sequential reads, a shuffle buffer);
evaluation reads single images by their byte offset, found once at ``setup`` from the tar headers.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np
import torch
import torch.distributed as dist
import torchvision.transforms.functional as TF
import webdataset as wds
from lightning.fabric.utilities.rank_zero import rank_zero_only
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ssl_toolkit.data.base import ImageDataModule, check_positive
from ssl_toolkit.data.image_files import JPEG_END, PNG_END, decode_resized
from ssl_toolkit.data.image_folder import eval_folder
from ssl_toolkit.data.whole_image import join_batches, load_whole, pad_collate
from ssl_toolkit.data.worker_signals import ignore_stop_signals

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp")  # a sample's first member with one of these is its image
LABEL_SUFFIX = "cls"  # an integer class index as text


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard URLs of a spec: brace patterns (``train-{000000..000099}.tar``), ``::``-joined lists,
    or a list of either; local paths or fsspec URLs (``s3://``, ``gs://``, ``https://``...)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    return [url for s in specs for url in wds.shardlists.expand_urls(s)]


@dataclass
class ShardIndex:
    """Where every sample of a list of shards is.

    Attributes:
        urls: the S shard URLs.
        shard: (N,) shard number of each sample.
        offset: (N,) byte offset of the sample's image in its shard.
        size: (N,) byte size of the image.
        labels: (N,) int64 class index (-1 without a ``cls`` member).
        starts: (S + 1,) index of each shard's first sample (the last entry is N).
        bad: ``(shard-url:member, reason)`` of each sample whose image cannot be decoded.
        good: (N,) bool, False for those samples (kept in the index so that positions match the
            stream's; every loader passes over them).
    """

    urls: list[str]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    labels: np.ndarray
    starts: np.ndarray
    bad: list[tuple[str, str]]
    good: np.ndarray


def image_problem(member: Any) -> str | None:
    """Why a shard member (an open ``tarfile`` member file) is not a decodable image, or None.

    Cheap, as the folder check: the first bytes must be an image signature, and a JPEG or PNG must
    end with its end marker; only when the marker is missing is the image decoded.
    """
    head = member.read(16)
    if not head:
        return "empty file"
    kinds = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP"}
    kind = next((k for sig, k in kinds.items() if head.startswith(sig)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WEBP"
    if kind is None:
        return "not an image"
    member.seek(-8, os.SEEK_END)
    tail = member.read(8)
    if (kind == "JPEG" and tail.endswith(JPEG_END)) or (kind == "PNG" and tail == PNG_END) or kind in ("BMP", "WEBP"):
        return None
    member.seek(0)
    try:
        with Image.open(io.BytesIO(member.read())) as img:
            img.load()
    except Exception as e:  # noqa: BLE001 - truncated or corrupt: the reason is reported
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"corrupt ({first[:80]})"
    return None


def index_shards(urls: list[str], arg: str) -> ShardIndex:
    """Read the tar headers (and ``cls`` members) of every shard once; samples in shard order.

    Samples are grouped exactly as WebDataset groups them (consecutive members with one key, see
    ``webdataset.tariterators.base_plus_ext``); a sample without an image member is left out. Each
    image is checked as folder images are (``image_problem``); bad ones are listed in ``bad``.

    Raises:
        FileNotFoundError: a shard cannot be opened (names ``arg`` and the URL).
        ValueError: a shard is not a tar file, or a ``cls`` member is not a class index >= 0.
    """
    shard, offset, size, labels, starts, bad, good = [], [], [], [], [0], [], []
    for s, url in enumerate(urls):
        try:
            handle = fsspec.open(url, "rb").open()
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{arg}: cannot open {url} ({e})") from None
        try:
            with handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                key, image, label = None, None, -1
                for member in tar:
                    name_key, suffix = wds.tariterators.base_plus_ext(member.name)
                    if not member.isreg() or name_key is None or os.path.basename(member.name).startswith("__"):
                        continue
                    if name_key != key:
                        if image is not None:
                            shard.append(s), offset.append(image[0]), size.append(image[1]), labels.append(label)
                            good.append(image[2] is None)
                        key, image, label = name_key, None, -1
                    suffix = suffix.lower()
                    if suffix in IMAGE_SUFFIXES and image is None:
                        problem = image_problem(tar.extractfile(member))
                        if problem is not None:
                            bad.append((f"{url}:{member.name}", problem))
                        image = (member.offset_data, member.size, problem)
                    elif suffix == LABEL_SUFFIX:
                        text = tar.extractfile(member).read().decode(errors="replace").strip()
                        if not text.isdigit():
                            raise ValueError(f"{arg}: {url}: {member.name} is not a class index >= 0 ({text[:20]!r})")
                        label = int(text)
                if image is not None:
                    shard.append(s), offset.append(image[0]), size.append(image[1]), labels.append(label)
                    good.append(image[2] is None)
        except tarfile.TarError as e:
            raise ValueError(f"{arg}: {url} is not a tar shard ({e})") from None
        starts.append(len(shard))
    return ShardIndex(urls, np.array(shard, np.int32), np.array(offset, np.int64), np.array(size, np.int64),
                      np.array(labels, np.int64), np.array(starts, np.int64), bad, np.array(good, bool))  # fmt: skip


def decode_bytes(data: bytes, image_size: int, resize_size: int) -> torch.Tensor:
    """uint8 (3, S, S) of an encoded image: upright RGB, shorter side -> ``resize_size``, center crop."""
    return TF.pil_to_tensor(decode_resized(io.BytesIO(data), image_size, resize_size))


class ShardImages(Dataset):
    """Random access to the images of indexed shards (evaluation loaders over some rows of a split).

    Each image is one ranged read of its shard (files are opened lazily, once per loader worker).
    Samples whose image is bad (``index.good`` False) are not part of it: item ``i`` is the
    ``i``-th good sample (``rows[i]`` in the index).

    Args:
        index: from ``index_shards``.
        image_size: side S of the (3, S, S) uint8 images.
        resize_size: shorter side before the center crop.
        labelled: False = every label is -1 (``labels: none``).
    """

    def __init__(self, index: ShardIndex, image_size: int, resize_size: int, labelled: bool = True) -> None:
        self.index, self.image_size, self.resize_size = index, image_size, resize_size
        self.rows = np.flatnonzero(index.good)
        self.item_of = np.full(len(index.good), -1, np.int64)  # index position -> item (-1: bad image)
        self.item_of[self.rows] = np.arange(len(self.rows))
        self.labels = index.labels[self.rows] if labelled else np.full(len(self.rows), -1, np.int64)
        self._files: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}  # open files stay in the process that opened them

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        """Return ``(uint8 (3, S, S), label, i)``."""
        row = int(self.rows[i])
        s = int(self.index.shard[row])
        if s not in self._files:
            self._files[s] = fsspec.open(self.index.urls[s], "rb").open()
        f = self._files[s]
        f.seek(int(self.index.offset[row]))
        data = f.read(int(self.index.size[row]))
        return decode_bytes(data, self.image_size, self.resize_size), int(self.labels[i]), i


class ShardStream(IterableDataset):
    """The training stream: whole shards split over processes and loader workers, then shuffled;
    whole images (longer side at most ``max_side``, ``whole_image.decode_whole``).

    Consumer c = rank x workers + worker reads the shards at positions c, c + C, c + 2C... (C =
    processes x workers) of a shard order drawn from (seed, epoch), so one pass over the shards
    gives every sample to exactly one consumer. Each consumer shuffles its samples through a buffer
    of ``shuffle_buffer`` samples (``webdataset.shuffle``, its own seeded RNG). With ``repeat`` the
    pass starts over (a new shard order) when a consumer's shards run out.

    Yields:
        ``(uint8 (3, h, w), label, index)``; ``index`` is the sample's item number in ``images``
        (samples with a bad image are passed over).
    """

    def __init__(
        self, images: ShardImages, shuffle_buffer: int, seed: int, epoch: int, rank: int, world_size: int,
        repeat: bool = False, max_side: int = 512,
    ) -> None:  # fmt: skip
        super().__init__()
        self.images, self.shuffle_buffer, self.seed, self.epoch = images, shuffle_buffer, seed, epoch
        self.rank, self.world_size, self.repeat, self.max_side = rank, world_size, repeat, max_side

    def consumer(self) -> tuple[int, int]:
        """(this consumer's number, number of consumers)."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        for one_pass in self.passes():
            yield from one_pass

    def passes(self) -> Iterator[Iterator[tuple[torch.Tensor, int, int]]]:
        """This consumer's passes over its shards (one, or endless with ``repeat``), each a sample iterator."""
        index = self.images.index
        consumer, consumers = self.consumer()
        for cycle in itertools.count():
            # str seeds are hashed with SHA-512: the same order in every process and worker
            order = random.Random(f"{self.seed}/{self.epoch}/{cycle}").sample(range(len(index.urls)), len(index.urls))
            mine = order[consumer::consumers]
            if not mine:
                return
            rng = random.Random(f"{self.seed}/{self.epoch}/{cycle}/{consumer}")
            yield self._decoded(mine, rng)
            if not self.repeat:
                return

    def chunks(self, size: int) -> Iterator[list[torch.Tensor]]:
        """The samples batched ``size`` at a time (``whole_image.pad_collate``: ``[uint8 (n, 3, H, W),
        int64 (n,), int64 (n,), int64 sizes (n, 2)]``) with n <= size; a chunk never spans two
        passes (the last of a pass may be shorter)."""
        for one_pass in self.passes():
            while group := list(itertools.islice(one_pass, size)):
                yield pad_collate(group)

    def _decoded(self, shards: list[int], rng: random.Random) -> Iterator[tuple[torch.Tensor, int, int]]:
        # shuffled while still encoded (the buffer holds file bytes), then decoded
        buffered = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        for data, position, where in buffered(self._samples(shards)):
            i = int(self.images.item_of[position])
            if i < 0:  # found bad at setup: listed in bad_files.txt, passed over silently here
                continue
            try:
                image = load_whole(io.BytesIO(data), self.max_side)
            except Exception as e:  # noqa: BLE001 - a bad image: skip it, keep training
                log.warning("webdataset: %s cannot be decoded (%s); skipped", where, e)
                continue
            yield image, int(self.images.labels[i]), i

    def _samples(self, shards: list[int]) -> Iterator[tuple[bytes, int, str]]:
        """``(encoded image, sample index, "shard-url:key")`` of the shards, in their order."""
        urls = self.images.index.urls
        number = {urls[s]: s for s in shards}
        members = wds.tariterators.tar_file_expander(self._open(shards), handler=wds.warn_and_continue)
        position, url = 0, None
        for sample in wds.tariterators.group_by_keys(members, handler=wds.warn_and_continue):
            image = next((v for k, v in sample.items() if k in IMAGE_SUFFIXES), None)
            if image is None:
                continue  # not a sample of the index either
            position, url = (position + 1, url) if sample["__url__"] == url else (1, sample["__url__"])
            yield image, int(self.images.index.starts[number[url]]) + position - 1, f"{url}:{sample['__key__']}"

    def _open(self, shards: list[int]) -> Iterator[dict[str, Any]]:
        for s in shards:
            url = self.images.index.urls[s]
            with fsspec.open(url, "rb") as stream:  # closed once the expander moves to the next shard
                yield {"url": url, "stream": stream}


class _Chunks(IterableDataset):
    """``ShardStream.chunks`` as a dataset, for loader workers."""

    def __init__(self, stream: ShardStream, size: int) -> None:
        super().__init__()
        self.stream, self.size = stream, size

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        return self.stream.chunks(self.size)


class EpochLoader:
    """The train loader of streamed shards: exactly ``len(self)`` batches per epoch on every process
    (DDP needs equal step counts), from a ``ShardStream`` of the trainer's current epoch.

    Loader workers hand over full batches, taken from them in turn, except at the end of a worker's
    pass over its shards, where it hands over what is left; such a short chunk is completed from
    the next worker's here. No worker holds back a partial batch, so when the workers' shards hold
    equal numbers of samples the epoch's batches use each sample once.
    """

    def __init__(self, data: WebDatasetData, rank: int, world_size: int) -> None:
        self.data, self.rank, self.world_size = data, rank, world_size
        self.batches = data.num_train_samples // (world_size * data.batch_size)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self._epoch = 0  # used without a trainer

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        trainer = self.data.trainer
        epoch = int(trainer.current_epoch) if trainer is not None else self._epoch
        self._epoch += 1
        batch, workers = self.data.batch_size, self.data.num_workers
        stream = ShardStream(self.data.train_set, self.data.shuffle_buffer, self.seed, epoch, self.rank,
                             self.world_size, repeat=True, max_side=self.data.max_side)  # fmt: skip
        # batch_size=None: the workers' chunks as they are (a full chunk is passed on without a copy)
        chunks = iter(DataLoader(_Chunks(stream, batch), batch_size=None, num_workers=workers,
                                 worker_init_fn=ignore_stop_signals))  # fmt: skip
        held: list[list[torch.Tensor]] = []  # chunks not yet in a batch
        count = 0
        try:
            for _ in range(self.batches):
                while count < batch:
                    held.append(next(chunks))
                    count += len(held[-1][2])
                joined = held[0] if len(held) == 1 else join_batches(held)
                yield [t[:batch] for t in joined] if count > batch else joined
                held = [[t[batch:] for t in joined]] if count > batch else []
                count -= batch
        finally:
            del chunks  # stops the workers


class WebDatasetData(ImageDataModule):
    """WebDataset tar shards: streamed for training, read by offset for evaluation.

    Training: whole shards are split over processes and loader workers (each sample goes to one
    of them per pass), shuffled through a buffer, decoded (EXIF orientation applied) as whole
    images (``max_side``; batches ``[images, labels, index, sizes]``, see ``whole_image``);
    every process takes ``num_train_samples // (processes x batch_size)`` batches per epoch. Each
    sample is seen exactly once per epoch when the shards hold equal numbers of samples and their
    count is a multiple of processes x workers (``tools/write_shards.py`` writes equal shards);
    otherwise a consumer whose shards run out starts over on them, so a few samples repeat and
    others wait for the next epoch. The shard order and the shuffle depend on (seed, epoch) only.

    Resume is at epoch granularity: a run resumed from a checkpoint written at an epoch end goes
    on exactly as an uninterrupted one; a checkpoint written mid-epoch resumes that epoch's sample
    order from its start (the remaining steps see the epoch's first samples).

    Args:
        train_shards: shard URLs: a brace pattern (``/data/train-{000000..000127}.tar``), a list,
            local paths or fsspec URLs (``s3://bucket/train-{000000..000127}.tar``; remote schemes
            need their fsspec package, e.g. s3fs).
        val_shards: held-out shards, or None (no held-out split).
        image_size: side S of the (3, S, S) uint8 evaluation images (resize + center crop).
        batch_size: samples per batch, per process.
        num_workers: loader workers per process; a process needs at least this many shards.
        shuffle_buffer: samples in each consumer's shuffle buffer (more: better mixing, more memory).
        labels: ``auto``: the ``cls`` members are labels (label -1 where a sample has none);
            ``none``: every label is -1.
        resize_size: shorter side before the evaluation crop (None = ``image_size``).
        eval_root: a separate labelled class-folder dataset for k-NN and the linear probe (see
            ``ImageFolderData``).
        max_bad_fraction: the largest fraction of samples per split whose image cannot be decoded
            (empty, truncated, not an image); those are listed in ``bad_files.txt`` and passed over,
            more stop the run before training (as for image folders).
        max_side: the longest side of a training image in pixels (larger ones are scaled down).

    ``setup`` reads every shard's tar headers once (local files: a seek per member; remote: one
    ranged read per member), which gives the sample count and the byte offsets.

    Raises:
        FileNotFoundError: a shard cannot be opened (at ``setup``).
        ValueError: a bad argument, a malformed shard, a negative ``cls`` label, labelled and
            unlabelled samples mixed, more bad images than ``max_bad_fraction``, or too few shards
            for the loader workers.
    """

    def __init__(
        self,
        train_shards: str | list[str],
        val_shards: str | list[str] | None = None,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 8,
        shuffle_buffer: int = 1000,
        labels: Literal["auto", "none"] = "auto",
        resize_size: int | None = None,
        eval_root: str | None = None,
        max_bad_fraction: float = 0.01,
        max_side: int = 512,
    ) -> None:
        super().__init__(image_size, batch_size, num_workers)
        check_positive(shuffle_buffer=shuffle_buffer, resize_size=resize_size, max_side=max_side)
        if not 0 <= max_bad_fraction < 1:
            raise ValueError(f"max_bad_fraction: must be in [0, 1), got {max_bad_fraction}")
        self.max_bad_fraction = max_bad_fraction
        self.max_side = max_side
        if labels not in ("auto", "none"):
            raise ValueError(f"labels: expected auto or none, got {labels!r}")
        if resize_size is not None and resize_size < image_size:
            raise ValueError(f"resize_size: {resize_size} is smaller than image_size {image_size}")
        self.train_urls = expand_shards(train_shards)
        self.val_urls = None if val_shards is None else expand_shards(val_shards)
        if not self.train_urls:
            raise ValueError("train_shards: names no shard")
        if len(self.train_urls) < max(num_workers, 1):
            raise ValueError(f"num_workers: {num_workers} loader workers need at least as many train shards, "
                             f"got {len(self.train_urls)}")  # fmt: skip
        self.shuffle_buffer, self.labels = shuffle_buffer, labels
        self.resize_size = resize_size or image_size
        self.eval_data = None if eval_root is None else eval_folder(eval_root, self)

    @property
    def num_classes(self) -> int:
        """Largest ``cls`` label + 1 (0 without labels); reads the shard headers on first use."""
        self.setup()
        return int(self.train_set.labels.max()) + 1 if len(self.train_set) and self.train_set.labels.max() >= 0 else 0

    @property
    def num_train_samples(self) -> int:
        """Samples in the train shards (reads the shard headers on first use)."""
        self.setup()
        return len(self.train_set)

    def _build(self) -> tuple[ShardImages, ShardImages | None]:
        labelled = self.labels == "auto"
        train = ShardImages(self._index(self.train_urls, "train_shards"), self.image_size, self.resize_size, labelled)
        if not len(train):
            raise ValueError(f"train_shards: {len(self.train_urls)} shards hold no decodable image samples")
        val = None
        if self.val_urls is not None:
            val = ShardImages(self._index(self.val_urls, "val_shards"), self.image_size, self.resize_size, labelled)
        if labelled:
            classes = int(train.labels.max()) + 1
            if val is not None and len(val) and (int(val.labels.min()) < 0) != (int(train.labels.min()) < 0):
                raise ValueError("val_shards: labelled and unlabelled splits mixed (train and val must both carry "
                                 ".cls labels, or neither); or set data.labels=none")  # fmt: skip
            if val is not None and len(val) and int(val.labels.max()) >= max(classes, 1):
                raise ValueError(f"val_shards: label {int(val.labels.max())} is not a train class (0 to {classes - 1})")
        _say_layout(self, train, val)
        return train, val

    def _index(self, urls: list[str], arg: str) -> ShardIndex:
        """``index_shards`` plus the checks: every sample labelled or none, bad images within
        ``max_bad_fraction`` (recorded in ``skipped``, reported once)."""
        index = index_shards(urls, arg)
        total, labelled = len(index.labels), int((index.labels >= 0).sum())
        if self.labels == "auto" and 0 < labelled < total:
            first = int(np.flatnonzero(index.labels < 0)[0])
            shard_url = index.urls[int(index.shard[first])]
            raise ValueError(
                f"{arg}: {labelled} of {total} samples have a .cls label and {total - labelled} do not (e.g. one in "
                f"{shard_url}); label every sample, or set data.labels=none"
            )
        if index.bad and len(index.bad) > self.max_bad_fraction * total:
            shown_bad = ", ".join(f"{where} ({why})" for where, why in index.bad[:3])
            raise ValueError(
                f"max_bad_fraction: {len(index.bad)} of {total} samples in {arg} cannot be decoded "
                f"({len(index.bad) / total:.1%} > {self.max_bad_fraction:.1%}): {shown_bad}; "
                "rewrite those shards, or raise data.max_bad_fraction"
            )
        if index.bad:
            self.skipped += index.bad
            log.warning("webdataset: %s: skipped %d of %d samples whose image cannot be decoded: %s", arg,
                        len(index.bad), total, ", ".join(f"{w} ({why})" for w, why in index.bad[:3]))  # fmt: skip
        return index

    def train_dataloader(self) -> EpochLoader:
        """``len`` batches per epoch of the streamed, shuffled train shards (rank-aware itself)."""
        self.setup()
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        consumers = world * max(self.num_workers, 1)
        if len(self.train_urls) < consumers:
            raise ValueError(
                f"train_shards: {len(self.train_urls)} shards cannot feed {world} processes x "
                f"{max(self.num_workers, 1)} loader workers (each reads whole shards); write at least "
                f"{consumers} shards (tools/write_shards.py --shard-size) or lower data.num_workers"
            )
        if self.num_train_samples < world * self.batch_size:
            raise ValueError(f"batch_size: {self.batch_size} x {world} processes is larger than the "
                             f"{self.num_train_samples} train samples")  # fmt: skip
        return EpochLoader(self, rank, world)


@rank_zero_only
def _say_layout(data: WebDatasetData, train: ShardImages, val: ShardImages | None) -> None:
    labelled = int((train.labels >= 0).sum())
    what = f"{labelled} of {len(train)} samples labelled" if labelled else "no labels (label -1)"
    if labelled:
        classes = int(train.labels.max()) + 1
        empty = sorted(set(range(classes)) - {int(c) for c in np.unique(train.labels)})
        what += f", {classes} classes (0 to the largest label)"
        if empty:  # .cls 0 and 7 only: classes 1-6 exist in name only
            what += f"; {len(empty)} of them have no sample: {', '.join(map(str, empty[:10]))}"
    held = "no held-out split" if val is None else f"held-out split of {len(val)} samples"
    log.warning("webdataset: %d train samples in %d shards, %s; %s", len(train), len(data.train_urls), what, held)
