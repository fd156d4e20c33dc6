"""``ssl-toolkit linear`` (solo-learn main_linear) and the ``knn`` (k, T) sweep (solo-learn main_knn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.embedding import EmbeddedSplit
from ssl_toolkit.errors import CheckpointError
from ssl_toolkit.eval.linear_eval import LinearEvalSettings, image_batches, normalization, train_linear
from ssl_toolkit.eval.probe import embed_labelled, knn_probe, labelled
from ssl_toolkit.recipe.checkpoint import load_checkpoint
from ssl_toolkit.run.cli import main

F_DIM, CLASSES, N, BATCH = 6, 3, 24, 8


def feature_batches(epoch: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A new 'view' of every sample each epoch (noise from the epoch's generator), in a shuffled order."""
    base = torch.Generator().manual_seed(1)
    centers, labels = torch.randn(CLASSES, F_DIM, generator=base), torch.arange(N) % CLASSES
    feats = centers[labels] + 0.5 * torch.randn(N, F_DIM, generator=generator)
    order = torch.randperm(N, generator=generator)
    return [(feats[i], labels[i]) for i in order.split(BATCH)]


def val_split() -> EmbeddedSplit:
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(12) % CLASSES
    centers = torch.randn(CLASSES, F_DIM, generator=torch.Generator().manual_seed(1))
    return EmbeddedSplit(centers[labels] + 0.5 * torch.randn(12, F_DIM, generator=g), None, labels, torch.arange(12))


SETTINGS = LinearEvalSettings(lr=0.5, epochs=5, batch_size=BATCH, milestones=(2, 4), seed=0)


def test_training_equals_a_plain_sgd_loop_with_lr_steps(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    result = train_linear(feature_batches, val_split(), F_DIM, CLASSES, SETTINGS, state, log=lambda _: None)
    torch.manual_seed(0)
    plain = torch.nn.Linear(F_DIM, CLASSES)  # nn.Linear's default init after manual_seed(seed)
    w, b = plain.weight.detach().clone(), plain.bias.detach().clone()
    buf_w = buf_b = None
    for epoch in range(5):
        lr = 0.5 * (0.1 if epoch >= 2 else 1.0) * (0.1 if epoch >= 4 else 1.0)  # x 0.1 after epochs 2 and 4
        for x, y in feature_batches(epoch, torch.Generator().manual_seed(epoch)):
            w.requires_grad_(True), b.requires_grad_(True)
            loss = -(x @ w.T + b).log_softmax(dim=1)[torch.arange(len(y)), y].mean()
            g_w, g_b = torch.autograd.grad(loss, (w, b))
            buf_w = g_w if buf_w is None else 0.9 * buf_w + g_w
            buf_b = g_b if buf_b is None else 0.9 * buf_b + g_b
            w, b = (w - lr * buf_w).detach(), (b - lr * buf_b).detach()
    saved = torch.load(state, weights_only=True)
    torch.testing.assert_close(saved["classifier"]["weight"], w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(saved["classifier"]["bias"], b, atol=1e-6, rtol=1e-5)
    assert [row["lr"] for row in result.history] == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])
    logits = val_split().feats @ w.T + b
    assert result.top1 == pytest.approx(float((logits.argmax(1) == val_split().labels).float().mean()))


def test_an_interrupted_run_continues_to_the_same_weights(tmp_path: Path) -> None:
    quiet = lambda _: None  # noqa: E731
    train_linear(feature_batches, val_split(), F_DIM, CLASSES, SETTINGS, tmp_path / "whole.pt", log=quiet)
    part = tmp_path / "part.pt"
    train_linear(feature_batches, val_split(), F_DIM, CLASSES, SETTINGS, part, stop_after=2, log=quiet)
    assert torch.load(part, weights_only=True)["epoch"] == 2
    lines: list[str] = []
    resumed = train_linear(feature_batches, val_split(), F_DIM, CLASSES, SETTINGS, part, log=lines.append)
    assert lines[0].startswith("resumed from") and len(resumed.history) == 5 and len(lines) == 4
    whole, again = torch.load(tmp_path / "whole.pt", weights_only=True), torch.load(part, weights_only=True)
    for key in ("weight", "bias"):
        assert torch.equal(whole["classifier"][key], again["classifier"][key])
    other = LinearEvalSettings(lr=0.1, epochs=5, batch_size=BATCH, milestones=(2, 4))
    with pytest.raises(CheckpointError, match="other settings"):
        train_linear(feature_batches, val_split(), F_DIM, CLASSES, other, part, log=quiet)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("linear")
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp)
    recipe["data"].update(num_samples=32, num_val_samples=16, batch_size=16, image_size=16)
    recipe["augment"]["size"] = 16
    recipe["head"].update(hidden_dim=32, out_dim=16)
    recipe["callbacks"] = {"checkpoint": {}}
    path = tmp / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_image_views_are_random_resized_crops_drawn_from_the_generator(tiny_ckpt: Path) -> None:
    loaded = load_checkpoint(tiny_ckpt)
    dataset = loaded.datamodule.train_eval_dataloader().dataset
    mean, std = normalization(loaded.recipe["augment"])
    assert (mean, std) == ([0.286] * 3, [0.353] * 3)  # the Fashion-MNIST recipe's keys
    assert normalization({"name": "multicrop"}) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # defaults
    batches = image_batches(loaded.module, dataset, LinearEvalSettings(batch_size=16), mean, std)
    first = list(batches(0, torch.Generator().manual_seed(5)))
    again = list(batches(0, torch.Generator().manual_seed(5)))
    other = list(batches(1, torch.Generator().manual_seed(6)))
    assert len(first) == 2 and first[0][0].shape == (16, loaded.module.feature_dim)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])


def test_linear_cli_writes_progress_result_and_resumes(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["linear", str(tiny_ckpt), "--lr", "0.5", "--epochs", "2", "--milestones", "1", "--batch-size", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "written:" in out
    record = json.loads((tiny_ckpt.parent.parent / "eval" / "linear-last.json").read_text())
    assert len(record["history"]) == 2 and 0.0 <= record["top1"] <= record["top5"] <= 1.0
    assert record["linear"]["milestones"] == [1] and record["num_val"] == 16
    assert main(args) == 0  # the saved state is complete: nothing to train, a new result file
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch 1/2" not in out and "linear-last_1.json" in out
    again = json.loads((tiny_ckpt.parent.parent / "eval" / "linear-last_1.json").read_text())
    assert again["top1"] == record["top1"]
    assert main(["linear", str(tiny_ckpt), "--lr", "0"]) == 2
    assert "--lr: must be > 0" in capsys.readouterr().err


def test_knn_sweeps_k_and_temperature_on_the_whole_train_split(tiny_ckpt: Path) -> None:
    assert main(["knn", str(tiny_ckpt), "--k", "5,10", "--temperature", "0.05,0.5"]) == 0
    record = json.loads((tiny_ckpt.parent.parent / "eval" / "knn-last.json").read_text())
    sweep = record["knn"]["sweep"]
    assert [(r["k"], r["temperature"]) for r in sweep] == [(5, 0.05), (5, 0.5), (10, 0.05), (10, 0.5)]
    loaded = load_checkpoint(tiny_ckpt)
    train, val = embed_labelled(loaded.module, loaded.datamodule)
    classes = labelled(loaded.datamodule).num_classes
    assert record["num_train"] == 32  # every train image is in the bank
    for row in sweep:
        assert row["top1"] == knn_probe(train, val, classes, row["k"], row["temperature"]).top1
    assert record["top1"] == max(r["top1"] for r in sweep)
