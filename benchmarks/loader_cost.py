"""Loader cost of training views cut from whole images, against the center-crop loader it replaced.

    python benchmarks/loader_cost.py [--images 256] [--portrait-fraction 0.25] [--batch 64] [--rounds 3]

Writes ImageNet-like JPEGs (``tools/fake_photos.py``: 500 x 375, a share of them 375 x 500) to a
temporary folder and measures, in this one process (one worker, one torch thread, CPU seconds from
``time.process_time``, the best of ``--rounds`` passes):

* ``center crop (before)``: what the train loader did before, resize shorter side 256 + center
  crop 224 per image, default collate (today's evaluation loader, ``split_dataloader``);
* ``whole image (after)``: the train loader now: whole images (longer side <= ``max_side`` 512)
  on one canvas with their sizes (``pad_collate``);
* ``CPU crops``: the design not taken, for reference: decode the whole image and cut every view
  on the CPU with PIL (torchvision's crop geometry), 2 views and 2 + 6 views (224 / 96 px).

For both loaders the CPU work does not depend on the number of views (the views are cut on the
device). Host-to-device bytes per image are the batch's tensors (all entries) over its images.
``--augment`` also times the device-side crop + augmentation of one batch on this machine's CPU
(a proxy where there is no GPU): 2 x 224 (simclr) and 2 x 224 + 6 x 96 (multicrop).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2 as T
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from fake_photos import fake_photo  # noqa: E402

from ssl_toolkit.augment import MultiCropAugment, SimCLRAugment  # noqa: E402
from ssl_toolkit.data import ImageFolderData  # noqa: E402
from ssl_toolkit.data.whole_image import decode_whole  # noqa: E402


def write_photos(folder: Path, count: int, portrait_fraction: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (375, 500) if i < round(count * portrait_fraction) else (500, 375)
        fake_photo(rng, w, h).save(folder / f"photo_{i:05d}.jpg", quality=90)


def cpu_seconds(loader: object, rounds: int) -> tuple[float, float]:
    """(best CPU s per image over ``rounds`` passes, mean host-to-device bytes per image)."""
    best, nbytes, images = math.inf, 0, 0
    for _ in range(rounds):
        start, count = time.process_time(), 0
        for batch in loader:
            count += batch[0].shape[0]
            nbytes += sum(t.nbytes for t in batch)
            images += batch[0].shape[0]
        best = min(best, (time.process_time() - start) / count)
    return best, nbytes / images


def cpu_crops(paths: list[Path], views: list[tuple[int, tuple[float, float]]], rounds: int) -> tuple[float, float]:
    """The design not taken: whole decode, then every view cut and resized by PIL on the CPU."""
    best, nbytes = math.inf, sum(3 * s * s for s, _ in views)
    for _ in range(rounds):
        start = time.process_time()
        for path in paths:
            image = decode_whole(path, 512)
            for size, scale in views:
                top, left, h, w = T.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
                crop = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
                TF.pil_to_tensor(crop)
        best = min(best, (time.process_time() - start) / len(paths))
    return best, nbytes


def augment_seconds(batch: list[torch.Tensor], rounds: int) -> list[tuple[str, float, float]]:
    """Seconds per image of the crop + augmentation of one batch, whole canvas vs 224 px squares."""
    images, _, _, sizes = batch
    squares = torch.stack([TF.center_crop(TF.resize(im[:, :h, :w], 256, antialias=True), 224)
                           for im, (h, w) in zip(images, sizes.tolist(), strict=True)])  # fmt: skip
    rows = []
    for name, augment in (("simclr 2x224", SimCLRAugment(224)), ("multicrop 2x224+6x96", MultiCropAugment(224))):
        for what, x, s in (("whole canvas", images, sizes), ("224 px square", squares, None)):
            best = math.inf
            for _ in range(rounds):
                start = time.perf_counter()
                augment(x, torch.Generator().manual_seed(0), sizes=s)
                best = min(best, (time.perf_counter() - start) / x.shape[0])
            rows.append((name, what, best))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--images", type=int, default=256, help="fake photos to write (default: %(default)s)")
    parser.add_argument("--portrait-fraction", type=float, default=0.25, help="share of 375 x 500 photos")
    parser.add_argument("--batch", type=int, default=64, help="loader batch size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="passes; the best counts (default: %(default)s)")
    parser.add_argument("--augment", action="store_true", help="also time the crop + augmentation on this CPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root, args.images, args.portrait_fraction)
        data = ImageFolderData(str(root), image_size=224, resize_size=256, batch_size=args.batch, num_workers=0,
                               val_dir=None, labels="none", max_side=512)  # fmt: skip
        data.setup("fit")
        before = cpu_seconds(data.split_dataloader("train"), args.rounds)
        after = cpu_seconds(data.train_dataloader(), args.rounds)
        paths = sorted(root.glob("*.jpg"))
        two = cpu_crops(paths, [(224, (0.08, 1.0))] * 2, args.rounds)
        multi = cpu_crops(paths, [(224, (0.14, 1.0))] * 2 + [(96, (0.05, 0.14))] * 6, args.rounds)
        print(f"{args.images} JPEGs (500 x 375, {args.portrait_fraction:.0%} 375 x 500), batch {args.batch}, "
              f"1 worker, 1 thread, best of {args.rounds}; CPU: {os.cpu_count()} cores\n")  # fmt: skip
        print("| loader | views | CPU ms / image | images / s per core | vs before | host-to-device bytes / image |")
        print("|---|---|---|---|---|---|")
        rows = [("center crop 224 of 256 (before)", "2 or 2+6", *before),
                ("whole image, max_side 512 (after)", "2 or 2+6", *after),
                ("CPU crops (not taken)", "2 x 224", *two),
                ("CPU crops (not taken)", "2 x 224 + 6 x 96", *multi)]  # fmt: skip
        for name, views, seconds, nbytes in rows:
            print(f"| {name} | {views} | {seconds * 1e3:.2f} | {1 / seconds:.0f} | {seconds / before[0]:.2f}x "
                  f"| {nbytes:,.0f} |")  # fmt: skip
        if args.augment:
            print("\n| augmentation (this CPU, 1 thread) | input | ms / image |\n|---|---|---|")
            for name, what, seconds in augment_seconds(next(iter(data.train_dataloader())), args.rounds):
                print(f"| {name} | {what} | {seconds * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
