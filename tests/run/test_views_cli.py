"""``ssl-toolkit views``: a recipe's training views as PNG files, made by the training code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_toolkit.recipe.build import load_recipe
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.views import training_views

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "own_images" / "simclr.yaml")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Four noise PNGs of different sizes and orientations."""
    folder, g = tmp_path / "photos", np.random.default_rng(0)
    folder.mkdir()
    for i, (w, h) in enumerate(((40, 30), (30, 40), (36, 36), (50, 20))):
        Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _args(photos: Path, *extra: str) -> list[str]:
    return ["views", RECIPE, f"data.root={photos}", "data.image_size=16", "augment.size=16", *extra]


def test_writes_the_overview_and_every_view_as_the_training_path_makes_them(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_args(photos, "--images", "3", "--out", str(out))) == 0
    assert sorted(p.name for p in out.iterdir()) == ["views", "views.png"]
    files = sorted((out / "views").iterdir())
    assert [p.name for p in files] == [f"image{i:03d}_view{v:02d}.png" for i in range(3) for v in range(2)]
    recipe = load_recipe(RECIPE, [f"data.root={photos}", "data.image_size=16", "augment.size=16"])
    images, _, sizes, views = training_views(recipe, 3)  # the same seed: the same draws
    assert sizes is not None and sizes.tolist()[0] in ([30, 40], [40, 30], [36, 36], [20, 50])  # whole images
    for path in files:
        i, v = int(path.stem[5:8]), int(path.stem[-2:])
        with Image.open(path) as png:
            assert png.mode == "RGB" and png.size == (16, 16)
            expected = views[v][i].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.array_equal(np.asarray(png), expected)
    with Image.open(out / "views.png") as sheet:
        assert sheet.height == 3 * (16 + 4) + 4


def test_never_writes_over_a_non_empty_folder_without_force(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(_args(photos, "--images", "2", "--out", str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssl-toolkit: error: --out:") and "\n" not in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main(_args(photos, "--images", "2", "--out", str(out), "--force")) == 0
    assert main(_args(photos, "--images", "1", "--out", str(out), "--force")) == 0  # earlier views replaced
    assert len(list((out / "views").iterdir())) == 2 and (out / "mine.txt").read_text() == "keep"
    (out / "views" / "notes.txt").write_text("mine")
    assert main(_args(photos, "--images", "1", "--out", str(out), "--force")) == 2  # never removed
    assert (out / "views" / "notes.txt").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--images", "0"), "--images: must be >= 1"),
        (("--images", "9"), "--images: 9 is more than the 4 training images"),
        (("--images", "2", "augment.crop_scale=[0.5]"), "augment: crop_scale"),
        (("--images", "2", "data.max_side=0"), "data.max_side"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "out"
    assert main(_args(photos, *extra, "--out", str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssl-toolkit: error: ") and message in err and "\n" not in err
    assert not out.exists()
