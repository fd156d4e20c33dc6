"""Write image files into WebDataset tar shards (read back by ``WebDatasetData``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import webdataset as wds

from ssl_toolkit.data.base import check_positive


def write_shards(samples: Sequence[tuple[str, int]], pattern: str, shard_size: int) -> list[tuple[str, int]]:
    """Pack image files into tar shards of ``shard_size`` samples (the last one may hold fewer).

    Sample k becomes the members ``{k:09d}.<ext>`` (the file's bytes, unchanged: the same pixels
    after decoding) and, when its label is >= 0, ``{k:09d}.cls`` (the label as text), in order.

    Args:
        samples: ``(path, label)`` of the images (label -1: none), e.g. a data module's checked files.
        pattern: shard file name with one ``%d``-style field, e.g. ``out/train-%06d.tar``.
        shard_size: samples per shard.

    Returns:
        ``(shard path, samples in it)`` per shard written.

    Raises:
        ValueError: ``shard_size`` is not positive, ``pattern`` has no ``%`` field, or no samples.
    """
    check_positive(shard_size=shard_size)
    if "%" not in pattern:
        raise ValueError(f"pattern: {pattern!r} needs a %d field for the shard number, e.g. train-%06d.tar")
    if not samples:
        raise ValueError("samples: nothing to write")
    counts: dict[str, int] = {}
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for k, (path, label) in enumerate(samples):
            ext = os.path.splitext(path)[1].lower().lstrip(".") or "jpg"
            with open(path, "rb") as f:
                sample = {"__key__": f"{k:09d}", ext: f.read()}
            if label >= 0:
                sample["cls"] = str(int(label)).encode()
            sink.write(sample)
            shard = pattern % (k // shard_size)
            counts[shard] = counts.get(shard, 0) + 1
    return list(counts.items())
