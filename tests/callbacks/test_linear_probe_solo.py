"""LinearProbe(protocol="solo_learn"): the classifier is a parameter group of the module's optimizer.

Checked against a plain loop written here: SGD with momentum 0.9 (and LARS for the weight), the
recipe's warm-up/cosine lr, cross-entropy averaged over both global views' features.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from distributed_worker import tiny_module
from torch import Tensor
from two_processes import run_case

from ssl_toolkit.callbacks import LinearProbe
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.optim import LARSFactory, SGDFactory, WarmupCosine
from ssl_toolkit.rng import seed_streams

BATCH, STEPS_PER_EPOCH, EPOCHS, LR = 16, 4, 2, 0.8


class RecordingProbe(LinearProbe):
    """Keeps what the optimizer step saw: the detached global-view features and the labels."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.seen: list[tuple[list[Tensor], Tensor]] = []
        self.initial: tuple[Tensor, Tensor] | None = None

    def feature_loss(self, feats: list[Tensor], labels: Tensor) -> Tensor:
        if self.initial is None:
            self.initial = (self.classifier.weight.detach().clone(), self.classifier.bias.detach().clone())
        self.seen.append(([f.detach().clone() for f in feats], labels.clone()))
        return super().feature_loss(feats, labels)


def fit(tmp_path: Path, factory: object, callbacks: list[pl.Callback]) -> pl.LightningModule:
    module = tiny_module(seed=0)
    module.optimizer_factory = factory
    module.scheduler_factory = WarmupCosine(warmup_epochs=1, start_factor=0.1, min_factor=0.0)
    pl.seed_everything(0, verbose=False)
    seed_streams(0)  # the augmentation's draws (a bare Trainer has no RNGState to seed them)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=tmp_path, max_epochs=EPOCHS, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, datamodule=SyntheticData(num_samples=BATCH * STEPS_PER_EPOCH, num_val_samples=32,
                                                 batch_size=BATCH))  # fmt: skip
    return module


def plain_lr(step: int) -> float:
    """lr * batch / 256 times: linear warm-up 0.1 -> 1 over the first epoch, then cosine to 0."""
    warmup, total = STEPS_PER_EPOCH, STEPS_PER_EPOCH * EPOCHS
    if step < warmup:
        factor = 0.1 + 0.9 * step / warmup
    else:
        factor = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    return LR * BATCH / 256 * factor


@pytest.mark.parametrize("lars", [False, True], ids=["sgd", "lars"])
def test_solo_protocol_equals_a_plain_momentum_loop_over_the_same_features(tmp_path: Path, lars: bool) -> None:
    factory = LARSFactory(lr=0.3, weight_decay=1e-4, trust_coefficient=0.02) if lars else SGDFactory(lr=0.3)
    probe = RecordingProbe(lr=LR, protocol="solo_learn")
    module = fit(tmp_path / "probe", factory, [probe])
    assert len(probe.seen) == STEPS_PER_EPOCH * EPOCHS
    assert all(len(feats) == 2 for feats, _ in probe.seen)  # both global views

    w, b = (t.clone().requires_grad_(True) for t in probe.initial)
    buf_w = buf_b = None
    for step, (feats, labels) in enumerate(probe.seen):
        # mean over views of the mean cross-entropy -log softmax(W f + b)[y]
        loss = torch.stack([-(f @ w.T + b).log_softmax(dim=1)[torch.arange(len(labels)), labels].mean()
                            for f in feats]).mean()  # fmt: skip
        g_w, g_b = torch.autograd.grad(loss, (w, b))
        lr = plain_lr(step)
        if lars:  # trust ratio 0.02 |w| / |g| (weight decay 0), clipped at 1 after dividing by lr
            g_w = g_w * min(0.02 * w.norm() / g_w.norm() / lr, 1.0)
        buf_w = g_w if buf_w is None else 0.9 * buf_w + g_w
        buf_b = g_b if buf_b is None else 0.9 * buf_b + g_b
        with torch.no_grad():
            w -= lr * buf_w
            b -= lr * buf_b
    torch.testing.assert_close(probe.classifier.weight.detach(), w.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probe.classifier.bias.detach(), b.detach(), atol=1e-6, rtol=1e-5)
    assert not torch.equal(probe.initial[0], w.detach())  # it trained

    # The classifier is in the module's optimizer with weight decay 0, and the backbone ran exactly
    # as without the probe (no gradient reaches it; its init draws from a private stream).
    groups = module.trainer.optimizers[0].param_groups
    mine = [g for g in groups if any(p is probe.classifier.weight for p in g["params"])]
    assert len(mine) == 1 and mine[0]["weight_decay"] == 0.0
    plain = fit(tmp_path / "plain", factory, [])
    for (name, a), c in zip(plain.backbone.state_dict().items(), module.backbone.state_dict().values()):
        assert torch.equal(a, c), name


def test_solo_protocol_rejects_weight_decay_and_unknown_protocols() -> None:
    with pytest.raises(ValueError, match="^weight_decay: "):
        LinearProbe(weight_decay=1e-4, protocol="solo_learn")
    with pytest.raises(ValueError, match="^protocol: "):
        LinearProbe(protocol="solo")


def test_unknown_labels_give_zero_loss_without_a_nan() -> None:
    probe = LinearProbe(protocol="solo_learn")
    probe.build(8, 3)
    loss = probe.feature_loss([torch.randn(4, 8), torch.randn(4, 8)], torch.full((4,), -1))
    assert float(loss) == 0.0
    feats = [torch.randn(4, 8)]
    labels = torch.tensor([0, -1, 2, 1])
    expected = torch.nn.functional.cross_entropy(probe.classifier(feats[0]), labels, ignore_index=-1)
    torch.testing.assert_close(probe.feature_loss(feats, labels), expected)


@pytest.mark.distributed
def test_two_processes_average_the_classifier_gradients_to_the_one_process_ones(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(8, 6, generator=g) for _ in range(2)]
    labels = torch.tensor([0, 1, 2, 0, 2, 2, 1, 0])
    ranks = run_case("solo_probe", {"feats": feats, "labels": labels, "num_classes": 3}, tmp_path)
    probe = LinearProbe(protocol="solo_learn")
    probe.build(6, 3)
    probe.feature_loss(feats, labels).backward()
    assert ranks[0]["loss"] != pytest.approx(float(ranks[1]["loss"]))  # each rank scores its own half
    for r in ranks:
        for got, want in zip(r["grads"], probe.classifier.parameters()):
            torch.testing.assert_close(got, want.grad)


def test_solo_protocol_on_unlabelled_data_is_one_line_naming_the_key(tmp_path: Path) -> None:
    from PIL import Image

    from conftest import REPO, tiny_recipe
    from ssl_toolkit.errors import RecipeError
    from ssl_toolkit.recipe.build import build_parts

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (36, 36), (10 * i, 20, 30)).save(folder / f"{i}.png")
    recipe = tiny_recipe(REPO / "recipes" / "imagenet100" / "simclr.yaml", tmp_path, keep_data=True)
    recipe["data"].update(root=str(folder), image_size=32, resize_size=32, batch_size=2, num_workers=0, labels="none")
    with pytest.raises(RecipeError, match="^callbacks.linear_probe.protocol: solo_learn trains on"):
        build_parts(recipe)
