"""SyncBN on every device: torch's SyncBatchNorm on GPUs, an autograd all-reduce BatchNorm elsewhere.

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU") and DDP refuses
it in CPU modules, so a CPU (gloo) DDP run, and the 2-process tests, could not use
``trainer.sync_batchnorm: true``. The recipe builder passes ``SyncBatchNormPlugin`` to Lightning
whenever ``trainer.sync_batchnorm`` is true: torch's layer on CUDA/XPU/HPU, ``AllReduceBatchNorm``
on other devices.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm, _BatchNormXd
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

NATIVE_SYNC_DEVICES = ("cuda", "xpu", "hpu")


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are over the global batch of all processes (any device).

    With per-channel sums over (N, H, W) on each process r:

        mean = sum_r S1_r / n,    var = sum_r S2_r / n,    n = sum_r N_r H W,
        S1_r = sum x,             S2_r = sum (x - mean)^2   (two all-reduces: no cancellation),
        y = (x - mean) / sqrt(var + eps) * weight + bias,

    with ``torch.distributed.nn`` all-reduces, whose backward all-reduces the gradient, so each
    process gets the gradient of the sum of all processes' losses (as torch's GPU kernel does).
    Running statistics use the unbiased global variance var * n / (n - 1), as ``F.batch_norm`` does.
    Outside training, or in a single process, it is plain BatchNorm. Under mixed precision the
    input may be bf16/fp16 (a convolution's output under autocast): the statistics, the counts and
    the normalization are computed in float32 (a half-precision sum over N H W values loses digits,
    and bf16 cannot even hold a count above 256 exactly) and the output has the input's dtype, as
    torch's ``SyncBatchNorm`` and ``F.batch_norm`` do.

    Shapes: input (N, C, *) -> output (N, C, *).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"input: expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()  # statistics and normalization in float32 whatever the input dtype
        local = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sums = dist_nn.all_reduce(torch.cat([x.sum(dims), local]))  # (C + 1,)
        count = sums[-1]
        mean = sums[:-1] / count  # (C,)
        centered = x - mean.view(shape)
        var = dist_nn.all_reduce(centered.square().sum(dims)) / count  # (C,), biased
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:  # None for a scale-only BN (heads.mlp.ScaleBatchNorm1d)
            out = out + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), factor)
        return out.to(input.dtype)


def swap_batchnorm(module: nn.Module, old: type[nn.Module], new: Callable[..., _BatchNorm]) -> nn.Module:
    """Replace every ``old`` layer in ``module`` by ``new(num_features, eps, momentum, affine,
    track_running_stats)`` sharing its parameters and buffers; returns the (possibly new) root."""
    out = module
    if isinstance(module, old):
        out = new(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, swap_batchnorm(child, old, new))
    return out


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning's ``sync_batchnorm`` plugin: torch's SyncBatchNorm on GPUs, ``AllReduceBatchNorm``
    on the CPU (the device is the strategy's, known when Lightning applies the plugin)."""

    def apply(self, model: nn.Module) -> nn.Module:
        trainer = model._trainer if isinstance(model, pl.LightningModule) else None
        device = trainer.strategy.root_device if trainer is not None else next(model.parameters()).device
        if device.type in NATIVE_SYNC_DEVICES:
            return super().apply(model)
        return swap_batchnorm(model, _BatchNorm, AllReduceBatchNorm)

    def revert(self, model: nn.Module) -> nn.Module:
        return super().revert(swap_batchnorm(model, AllReduceBatchNorm, _BatchNormXd))
