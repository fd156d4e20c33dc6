"""The augmentation never reads device data back to the host: its draws are made on the images'
device and every op is applied with ``torch.where`` on the drawn coins (no boolean-mask indexing,
no ``nonzero``, no ``.item()``), so on a GPU a training step does not wait for it. Checked on the
CPU with the loss tests' recorder of read-back ops, kornia's argument checks turned off: on the CPU
they read their condition on the host (harmless there), on CUDA they are device asserts
(``torch._assert_async``), which do not wait."""

from __future__ import annotations

import pytest
import torch
from kornia.core.check import are_checks_enabled, disable_checks, enable_checks
from losses.test_no_host_sync import SyncOps

from ssl_toolkit.augment import MultiCropAugment, SimCLRAugment
from ssl_toolkit.rng import seed_streams


@pytest.mark.parametrize("augment", [
    SimCLRAugment(16, blur_p=0.5, grayscale_p=0.5, solarize_p=0.5, jitter_p=0.5),
    MultiCropAugment(size=16, local_size=8, num_local=2, solarize_p=0.2),
], ids=["simclr", "multicrop"])  # fmt: skip
def test_training_views_never_read_back(augment: torch.nn.Module) -> None:
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[24, 24], [20, 24], [24, 13], [9, 9], [24, 24], [17, 22]])
    seed_streams(0)
    checks = are_checks_enabled()
    disable_checks()
    try:
        with SyncOps() as rec:
            views = augment(images, sizes=sizes)
    finally:
        if checks:
            enable_checks()
    assert rec.ops == [] and all(torch.isfinite(v).all() for v in views)
