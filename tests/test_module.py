"""SSLModule: one backbone call per resolution, augmentation only while training, embed()."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from conftest import TINY_BACKBONE, CountingBackbone
from ssl_toolkit.augment import SimCLRAugment
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.heads import SimCLRHead
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import LARSFactory, WarmupCosine
from ssl_toolkit.rng import seed_streams


def make_module(backbone: nn.Module | None = None) -> SSLModule:
    backbone = backbone or build_backbone(TINY_BACKBONE)[0]
    return SSLModule(
        backbone=backbone,
        head=SimCLRHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16),
        augment=SimCLRAugment(size=32),
        optimizer=LARSFactory(lr=0.3),
        scheduler=WarmupCosine(warmup_epochs=0.5),
    )


def test_backbone_runs_once_per_resolution() -> None:
    backbone = CountingBackbone(build_backbone(TINY_BACKBONE)[0])
    module = make_module(backbone)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16),
             torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]  # fmt: skip
    feats = module.forward_views(views)
    assert backbone.calls == [(8, 3, 32, 32), (12, 3, 16, 16)]
    assert [f.shape for f in feats] == [(4, backbone.num_features)] * 5
    # Order is preserved: view 3's features are what the backbone gives for view 3 alone.
    module.eval()
    torch.testing.assert_close(module.forward_views(views)[3], backbone.inner(views[3]), rtol=1e-4, atol=1e-5)


def test_embed_takes_uint8_and_gives_backbone_features(images: torch.Tensor) -> None:
    module = make_module().eval()
    out = module.embed(images)
    assert out.shape == (8, module.backbone.num_features) and not out.requires_grad
    expected = module.backbone(module.augment.eval_view(images))
    torch.testing.assert_close(out, expected)


def test_fit_trains_on_augmented_views_and_steps_schedule(tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    module = make_module()
    data = SyntheticData(num_samples=64, num_val_samples=16, batch_size=16)
    seen: list[tuple] = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((type(batch[0]).__name__, len(batch[0]), batch[0][0].dtype))

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()],
                         default_root_dir=tmp_path)  # fmt: skip
    before = [p.detach().clone() for p in module.backbone.parameters()]
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 8  # 64 / 16 per epoch, 2 epochs
    # The training step received augmented float views, not the uint8 batch.
    assert seen[0] == ("list", 2, torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.backbone.parameters()))
    sched = trainer.lr_scheduler_configs[0]
    assert sched.interval == "step"
    # Global batch 16 -> lr 0.3 * 16 / 256; after the full cosine it is back to ~0.
    assert sched.scheduler.base_lrs[0] == pytest.approx(0.3 * 16 / 256)
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-3


def test_plain_loop_with_step_loss_and_hooks_equals_the_trainer(tmp_path) -> None:
    """``step_loss`` + ``after_backward`` + ``after_optimizer_step`` in a plain PyTorch loop (what
    ``benchmarks/peer_lightly.py`` runs) trains exactly as Lightning's ``training_step``,
    ``on_after_backward`` and ``optimizer_step`` do: same weights, teacher and queue after 4 steps
    of a head with a momentum teacher (MoCo v2)."""
    from ssl_toolkit.heads import MoCoV2Head
    from ssl_toolkit.optim import SGDFactory, param_groups

    def build() -> SSLModule:
        torch.manual_seed(0)
        backbone = build_backbone(TINY_BACKBONE)[0]
        head = MoCoV2Head(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, queue_size=24)
        return SSLModule(backbone, head, SimCLRAugment(size=32), SGDFactory(lr=0.5, weight_decay=1e-4))

    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(32, dtype=torch.long), torch.arange(32))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)

    class Data(pl.LightningDataModule):
        batch_size = 8

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return loader

    trained = build()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    seed_streams(1)  # the augmentation's draws
    trainer.fit(trained, datamodule=Data())
    assert trainer.global_step == 4

    looped = build().train()
    optimizer = looped.optimizer_factory.build(param_groups(looped, looped.optimizer_factory.weight_decay), 8)
    seed_streams(1)
    for step, (batch, labels, index) in enumerate(loader):
        out, feats = looped.step_loss(looped.augment(batch), labels, index, step, 0)
        assert len(feats) == 2 and feats[0].shape == (8, looped.feature_dim)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        looped.after_backward(step)
        optimizer.step()
        looped.after_optimizer_step(step, total_steps=4)

    ours, theirs = looped.state_dict(), trained.state_dict()
    assert ours.keys() == theirs.keys() and any(k.startswith("teacher.") for k in ours)
    first = build().state_dict()
    for key in ("teacher.conv1.0.weight", "head.momentum_projector.0.weight", "head.queue"):
        assert not torch.equal(ours[key], first[key]), f"{key} did not change"
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-5, atol=1e-6, msg=key)
