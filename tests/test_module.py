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


def make_module(backbone: nn.Module | None = None) -> SSLModule:
    backbone = backbone or build_backbone(TINY_BACKBONE)
    return SSLModule(
        backbone=backbone,
        head=SimCLRHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16),
        augment=SimCLRAugment(size=32),
        optimizer=LARSFactory(lr=0.3),
        scheduler=WarmupCosine(warmup_epochs=0.5),
    )


def test_backbone_runs_once_per_resolution() -> None:
    backbone = CountingBackbone(build_backbone(TINY_BACKBONE))
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
