"""Few-step ``fit`` of shipped recipes in 1 process or in 2 DDP processes, for tests/integration/test_ddp_fit.py.

    python tests/integration/ddp_fit_worker.py OUT_DIR 1 NAME [NAME ...]                                   # reference
    torchrun --standalone --nproc_per_node 2 tests/integration/ddp_fit_worker.py OUT_DIR 2 NAME [NAME ...]  # DDP, gloo

NAME is a recipe in recipes/fashion_mnist/ (turned into a tiny run by ``conftest.tiny_recipe``,
with ``trainer.sync_batchnorm: true``). Both set-ups see the same global batch of GLOBAL_BATCH images
per step: DDP through Lightning's DistributedSampler (Lightning swaps it in), the reference through
``RankOrderBatches``, which yields the union of those two ranks' batches in the gathered (rank) order.
Augmentation is ``FixedViews``: the recipe's view sizes, but each view a fixed function of its image,
so both set-ups see the same views. Rank 0 writes ``OUT_DIR/NAME-world{W}.pt`` with the final state dict.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contracts.test_heads_contract import CASES  # noqa: E402

from conftest import REPO, tiny_recipe  # noqa: E402
from ssl_toolkit.recipe.build import build_parts, build_trainer  # noqa: E402
from ssl_toolkit.sync_batchnorm import AllReduceBatchNorm  # noqa: E402

STEPS, GLOBAL_BATCH, RANKS = 3, 16, 2


class FixedViews(nn.Module):
    """Test-only augmentation: the real augment's view sizes, view i = resize, flip if i is odd,
    brightness 1 - 0.15 i; deterministic per image, so any split of the batch gives the same views."""

    def __init__(self, real: nn.Module) -> None:
        super().__init__()
        self.real = real
        probe = real(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        self.sizes = [tuple(v.shape[-2:]) for v in probe]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = images.expand(-1, 3, -1, -1).float() / 255
        views = []
        for i, size in enumerate(self.sizes):
            v = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            v = v.flip(-1) if i % 2 else v
            views.append((v * (1 - 0.15 * i) - 0.4) / 0.3)
        return views

    def eval_view(self, images: Tensor) -> Tensor:
        return self.real.eval_view(images)


class RankOrderBatches(Sampler[list[int]]):
    """Batches of ``ranks * batch_size`` indices: per step, rank 0's DistributedSampler batch, then
    rank 1's, ... (same permutation: ``randperm(n)`` seeded with ``seed + epoch``, rank r takes
    ``perm[r::ranks]``)."""

    def __init__(self, n: int, batch_size: int, ranks: int, seed: int) -> None:
        self.n, self.batch_size, self.ranks, self.seed, self.epoch = n, batch_size, ranks, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.ranks)

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        per_rank = [perm[r :: self.ranks] for r in range(self.ranks)]
        for k in range(len(self)):
            yield [i for r in range(self.ranks) for i in per_rank[r][k * self.batch_size : (k + 1) * self.batch_size]]


class CountSyncBN(pl.Callback):
    """How many BatchNorm layers synchronize during training (Lightning reverts them afterwards)."""

    def __init__(self) -> None:
        self.count = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.count = sum(isinstance(m, (AllReduceBatchNorm, nn.SyncBatchNorm)) for m in pl_module.modules())


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    """The state dict's tensors (not extra states such as SwAV's per-process queue)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, Tensor)}


def run(name: str, out_dir: Path, world: int) -> None:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", out_dir / f"{name}-world{world}", STEPS)
    recipe["head"].update(CASES[recipe["head"]["name"]].get("fit_overrides", {}))
    recipe["data"]["batch_size"] = GLOBAL_BATCH // world
    recipe["callbacks"] = {}
    recipe["scheduler"] = None  # constant lr: updates large enough for the comparison to bite
    recipe["trainer"].update(devices=world, sync_batchnorm=True, enable_model_summary=False)
    if world > 1:
        recipe["trainer"]["strategy"] = "ddp"
    seed = int(recipe.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    parts = build_parts(recipe)
    module, data = parts.module, parts.datamodule
    module.augment = FixedViews(module.augment)
    if world == 1:
        batches = RankOrderBatches(len(data.train_set), GLOBAL_BATCH // RANKS, RANKS, seed)
        data.train_dataloader = lambda: DataLoader(data.train_set, batch_sampler=batches)  # type: ignore[method-assign]
    initial = _tensors(module)
    count = CountSyncBN()
    trainer = build_trainer(recipe, Path(recipe["out_dir"]), extra_callbacks=[count])
    trainer.fit(module, datamodule=data)
    if trainer.global_rank == 0:
        state = _tensors(module)
        group = trainer.optimizers[0].param_groups[0]
        lr = group.get("initial_lr", group["lr"])
        record = {"state": state, "initial": initial, "initial_lr": lr, "steps": trainer.global_step,
                  "sync_bn_layers": count.count}  # fmt: skip
        torch.save(record, out_dir / f"{name}-world{world}.pt")


def main() -> None:
    torch.set_num_threads(1)
    out_dir, world, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    for name in names:
        run(name, out_dir, world)


if __name__ == "__main__":
    main()
