"""curves.png: drawn from real histories, redrawn each epoch, history kept in checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, tiny_recipe
from ssl_toolkit.callbacks.curves_plot import plot_curves
from ssl_toolkit.run.cli import main


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    path = plot_curves(
        [1, 2, 3], [6.0, 5.5, 5.0], {"val/knn_top1": [(0, 0.5), (1, 0.6)], "val/rankme": [(0, 40.0), (1, 55.0)]},
        tmp_path / "sub" / "curves.png", title="run",
    )  # fmt: skip
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 1000


def test_fit_writes_curves_and_keeps_history_in_checkpoint(tmp_path: Path) -> None:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=8)
    recipe["trainer"]["max_epochs"] = 2  # 64 synthetic images / 16 = 4 steps per epoch
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    assert (tmp_path / "run" / "curves.png").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("Curves")]
    assert state["loss_steps"] == list(range(1, 9))  # global step after each update and len(state["losses"]) == 8
    assert all(0 < v < 20 for v in state["losses"])
