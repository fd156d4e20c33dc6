"""``views``: a recipe's training views of a few of its images, as PNG files to look at before training.

The images are the first N of the recipe's first training epoch (its ``seed``), loaded by the
recipe's data module exactly as training loads them (same decode, whole images and their sizes for
image files), and augmented by the recipe's augmentation exactly as ``SSLModule`` augments a
batch, from a generator seeded like the training process (``process_seed(seed, rank 0)``). Only
the final normalization is left out, so the files show the pixels the backbone is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssl_toolkit.data.image_files import shown
from ssl_toolkit.errors import ArgumentError, RecipeError
from ssl_toolkit.recipe.build import construct
from ssl_toolkit.rng import process_seed

GAP = 4  # px between the pictures of views.png
BACKGROUND = (255, 255, 255)


@dataclass
class WrittenViews:
    """What ``write_views`` wrote: the overview, the view files, and the images' sample indices."""

    overview: Path
    files: list[Path]
    indices: list[int]
    names: list[str] | None = None  # row i's file, printable (image files), else None


def check_out(out: Path, force: bool) -> None:
    """``out`` may be written: new, empty, or ``force`` with nothing but PNG files in ``out/views``.

    Raises:
        ArgumentError: ``out`` is a file, or a non-empty folder without ``force``, or its
            ``views/`` holds other files (never removed).
    """
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out: {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ArgumentError(f"--out: {out} exists and is not empty; pass --force to replace its views")
        views = out / "views"
        others = [p.name for p in views.iterdir() if p.suffix != ".png" or not p.is_file()] if views.is_dir() else []
        if others or (views.exists() and not views.is_dir()):
            raise ArgumentError(f"--out: {views} holds files that are not views ({', '.join(others[:3]) or 'views'})")


def training_views(recipe: dict[str, Any], images: int) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor]]:
    """The first ``images`` training images of ``recipe`` and their views (see ``_training_views``)."""
    return _training_views(recipe, images)[:4]


def _training_views(
    recipe: dict[str, Any], images: int
) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor], list[str] | None]:
    """The first ``images`` training images of ``recipe`` and their views, before normalization.

    Returns:
        ``(uint8 images (N, 3, H, W), int64 sample indices (N,), sizes (N, 2) or None, views)``:
        ``views`` as the augmentation returns them, V float tensors (N, 3, s, s) in [0, 1];
        then the images' file names when the data reads files (``paths``), else None.

    Raises:
        ArgumentError: ``images`` below 1 or above the train split.
        RecipeError: a data or augment section that cannot be built.
    """
    if images < 1:
        raise ArgumentError(f"--images: must be >= 1, got {images}")
    seed = int(recipe.get("seed", 0))
    pl.seed_everything(seed, verbose=False)  # as fit: the train order is drawn from this seed
    # One batch of N, loaded in this process; class-balanced batches are not needed for N images.
    spec = {**recipe["data"], "batch_size": images, "num_workers": 0}
    if "classes_per_batch" in spec:
        spec["classes_per_batch"] = None
    data = construct("data", spec)
    try:
        data.setup("fit")  # lists and checks the files: an empty or unreadable split fails here
    except (ValueError, FileNotFoundError) as e:
        raise RecipeError(f"data.{str(e).splitlines()[0]}") from None
    if data.num_train_samples < images:
        raise ArgumentError(f"--images: {images} is more than the {data.num_train_samples} training images")
    augment = construct("augment", recipe["augment"])
    batch, _, index, *whole = next(iter(data.train_dataloader()))
    sizes = whole[0] if whole else None
    generator = torch.Generator().manual_seed(process_seed(seed, 0))
    views = augment(batch, generator, sizes=sizes, normalized=False)
    # getattr with a default: files on disk have paths; webdataset and in-memory data have none.
    paths = getattr(data.train_set, "paths", None)
    names = None if paths is None else [shown(os.fsdecode(paths[i])) for i in index.tolist()]
    return batch, index, sizes, views, names


def to_pil(image: Tensor) -> Image.Image:
    """(3, h, w) float in [0, 1] or uint8 -> an 8-bit RGB image."""
    if image.dtype != torch.uint8:
        image = image.clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(image.expand(3, -1, -1).permute(1, 2, 0).numpy()), "RGB")


def overview(originals: list[Image.Image], views: list[list[Image.Image]]) -> Image.Image:
    """One row per image: the original (scaled to the largest view's height), then its views."""
    side = max(v.height for row in views for v in row)
    shown = [o.resize((max(1, round(o.width * side / o.height)), side), Image.Resampling.BILINEAR) for o in originals]
    width = max(o.width + sum(v.width + GAP for v in row) for o, row in zip(shown, views, strict=True))
    sheet = Image.new("RGB", (width + 2 * GAP, len(shown) * (side + GAP) + GAP), BACKGROUND)
    for r, (original, row) in enumerate(zip(shown, views, strict=True)):
        y, x = GAP + r * (side + GAP), GAP
        for picture in (original, *row):
            sheet.paste(picture, (x, y))
            x += picture.width + GAP
    return sheet


def write_views(recipe: dict[str, Any], images: int, out: Path, force: bool = False) -> WrittenViews:
    """Write ``out/views.png`` (one row per image: the original, then its views) and every view as
    ``out/views/image<i>_view<v>.png`` (lossless 8-bit RGB, before normalization); nothing else.

    Raises:
        ArgumentError: see ``check_out`` and ``training_views``; checked before anything is written.
        RecipeError: see ``training_views``.
    """
    check_out(out, force)
    batch, index, sizes, views, names = _training_views(recipe, images)
    originals = [
        to_pil(batch[i] if sizes is None else batch[i, :, : int(sizes[i, 0]), : int(sizes[i, 1])])
        for i in range(batch.shape[0])
    ]
    rows = [[to_pil(view[i]) for view in views] for i in range(batch.shape[0])]
    folder = out / "views"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):  # only with force (check_out): the earlier views
        os.remove(old)
    files = []
    for i, row in enumerate(rows):
        for v, picture in enumerate(row):
            files.append(folder / f"image{i:03d}_view{v:02d}.png")
            picture.save(files[-1])
    overview(originals, rows).save(out / "views.png")
    return WrittenViews(out / "views.png", files, index.tolist(), names)
