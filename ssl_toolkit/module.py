"""SSLModule: the one LightningModule for pretraining (backbone + head + on-device augmentation)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ssl_toolkit.backbone import BackboneFacts, BatchNormStats
from ssl_toolkit.ema import ema_update
from ssl_toolkit.embedding import EvalBatch
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views
from ssl_toolkit.optim import OptimizerFactory, WarmupCosine, param_groups
from ssl_toolkit.process_state import (
    PER_PROCESS_KEY,
    exclude_identical_buffers_from_ddp,
    gather_per_process_state,
    select_own_state,
)

Batch = tuple[Tensor, Tensor, Tensor]  # uint8 images (B, 3, H, W), labels (B,), indices (B,)
# Train batches of image files carry a fourth entry, sizes (B, 2): whole images (``data.whole_image``).

# The dtype of every feature and embedding the module hands to evaluation (``embed``,
# ``embed_views``, ``project``, ``validation_step``), whatever the training precision.
FEATURE_DTYPE = torch.float32


def _weight_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of ``net``'s first floating parameter (float32 under mixed precision, bf16/fp16
    under ``*-true`` half precisions): inputs are cast to it so a call outside autocast works."""
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return FEATURE_DTYPE  # a parameter-free net (e.g. an identity projection)


class SSLModule(pl.LightningModule):
    """Pairs a backbone with an SSL head; knows no method names.

    ``validation_step`` embeds the evaluation images (no loss), every batch alike; the evaluation
    callbacks compute their ``val/`` metrics from its outputs inside Lightning's validation loop.

    One training step (the data flow of README "Layout"):
      1. ``on_after_batch_transfer``: ``augment`` turns the uint8 batch into V float views on the
         training device (only while training; evaluation batches pass through untouched); a
         batch of whole images hands its ``sizes`` (B, 2) on, so crops stay inside each image;
      2. the backbone runs once per resolution group (views of one size concatenated);
      3. ``head(Views(feats), BatchInfo(...)) -> HeadOutput``; ``train/loss`` and the head's logs
         are logged without host syncs.

    A head with ``uses_teacher`` gets an EMA copy of the backbone (``self.teacher``, saved in
    checkpoints with the rest of the module), run without gradient on the global views and updated
    after every optimizer step with the head's ``teacher_momentum``. Heads' ``after_backward`` and
    ``after_step`` hooks are called here too (see ``SSLHead``).

    Args:
        backbone: images (N, 3, H, W) -> features (N, F), e.g. from ``build_backbone``.
        head: an ``SSLHead``.
        augment: uint8 (B, C, H, W) -> list of V float views (with ``sizes=`` (B, 2) for batches of
            whole images); must also offer ``eval_view(uint8) -> float`` (deterministic resize +
            normalize) for ``embed``.
        optimizer: an optimizer factory from ``ssl_toolkit.optim`` (lr per 256 images).
        scheduler: a schedule factory, or None for a constant lr.
        channels_last: run the backbone in channels-last memory format (faster convs on GPU).
        compile_backbone: ``torch.compile`` the backbone (and teacher) in place (``nn.Module.compile``:
            parameter names and checkpoints unchanged); the first steps pay the compilation.
        backbone_facts: what ``build_backbone`` returned beside the backbone (its width, timm
            keywords, gradient checkpointing); None: ``BackboneFacts.of(backbone)`` (a backbone not
            built by ``build_backbone``). Kept as ``self.backbone_facts``, not in the state dict.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: SSLHead,
        augment: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: WarmupCosine | None = None,
        channels_last: bool = False,
        compile_backbone: bool = False,
        backbone_facts: BackboneFacts | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.augment = backbone, head, augment
        self.backbone_facts = backbone_facts if backbone_facts is not None else BackboneFacts.of(backbone)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last = channels_last
        self.teacher: nn.Module | None = None
        if head.uses_teacher:
            self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        if compile_backbone:
            for net in (self.backbone, self.teacher):
                if net is not None:
                    net.compile()
        self._total_steps = 0
        # Parameters outside the module trained by its optimizer on detached features (add_feature_loss).
        self._extra_param_groups: list[dict[str, Any]] = []
        self._feature_losses: list[Callable[[list[Tensor], Tensor], Tensor]] = []
        # Gradient checkpointing runs BatchNorm layers again in the backward pass: their running
        # statistics are put back to their value after the forward pass (one update per step).
        self._bn_stats = BatchNormStats() if self.backbone_facts.recomputes_forward else None
        # Buffers the head declares identical on every process (MoCo's queue) are not broadcast by
        # DDP before every forward (ssl_toolkit.process_state); BatchNorm statistics still are.
        exclude_identical_buffers_from_ddp(self)

    @property
    def feature_dim(self) -> int:
        """F, the width of the backbone features that ``embed`` returns (the head's ``in_dim``):
        ``build_backbone``'s ``feature_dim``, decided once from what the backbone returns."""
        return self.backbone_facts.feature_dim

    # --- features -------------------------------------------------------------------------
    def forward_views(self, views: list[Tensor], backbone: nn.Module | None = None) -> list[Tensor]:
        """Backbone features for each view, one backbone call per resolution: V x (B, F).

        ``backbone`` defaults to ``self.backbone`` (the teacher passes its own)."""
        backbone = self.backbone if backbone is None else backbone
        groups: dict[tuple[int, int], list[int]] = {}
        for i, v in enumerate(views):
            groups.setdefault((v.shape[-2], v.shape[-1]), []).append(i)
        feats: list[Tensor | None] = [None] * len(views)
        for idx in groups.values():
            x = torch.cat([views[i] for i in idx])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for i, f in zip(idx, backbone(x).chunk(len(idx))):
                feats[i] = f
        return feats  # type: ignore[return-value]

    def embed(self, images: Tensor) -> Tensor:
        """Backbone features of un-augmented uint8 images (B, C, H, W) -> (B, F) float32, no gradient.

        The one public entry point for evaluation callbacks; the caller sets train/eval mode. The
        features are ``FEATURE_DTYPE`` (float32) whatever the training precision: under bf16/fp16
        autocast the backbone runs in half precision and its output is cast back, so callbacks and
        offline verbs that read them outside autocast (projector, probe, SVD) see one dtype.
        """
        with torch.no_grad():
            x = self.augment.eval_view(images.to(self.device))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.backbone(x.to(_weight_dtype(self.backbone))).to(FEATURE_DTYPE)

    def embed_views(self, images: Tensor, num_views: int, generator: torch.Generator | None = None) -> Tensor:
        """Backbone features of ``num_views`` training-augmentation views of uint8 images (B, C, H, W)
        -> (B, num_views, F) float32 (``FEATURE_DTYPE``, as ``embed``), no gradient; one backbone
        call for all views.

        The views are ``augment``'s (only those of the first view's size: multi-crop's local crops
        are skipped, more calls are made until there are enough); every random parameter is drawn
        from ``generator`` (on the module's device; None: the toolkit's stream, ``rng.stream``), so
        a seeded generator gives the same views every time and leaves the training run's random
        stream untouched. The caller sets train/eval mode (evaluation: eval).
        """
        with torch.no_grad():
            images = images.to(self.device)
            views: list[Tensor] = []
            while len(views) < num_views:
                drawn = self.augment(images, generator=generator)
                views += [v for v in drawn if v.shape[-2:] == drawn[0].shape[-2:]]
            x = torch.stack(views[:num_views], dim=1).flatten(0, 1)  # (B V, C, H, W), image-major
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.backbone(x.to(_weight_dtype(self.backbone))).to(FEATURE_DTYPE)
            return feats.view(images.shape[0], num_views, -1)

    @property
    def projection_parts(self) -> int:
        """P: ``project`` returns P equal-width embeddings side by side, each its own similarity
        space (the head's ``embed_parts``: AMCL's C projection heads; 1 for every other head)."""
        return int(self.head.embed_parts)

    def project(self, feats: Tensor) -> Tensor:
        """Projector embeddings of backbone features (B, F) -> (B, D) float32 (``head.embed``), no
        gradient. Features of any floating dtype are accepted (cast to the head's weight dtype), inside
        or outside autocast; the result is ``FEATURE_DTYPE`` as ``embed``'s.

        The public entry point for callbacks that score the SSL embedding (RankMe on projections,
        diagnostics); the caller sets train/eval mode.
        """
        with torch.no_grad():
            return self.head.embed(feats.to(_weight_dtype(self.head))).to(FEATURE_DTYPE)

    # --- training -------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            images, labels, index, *whole = batch
            views = self.augment(images, sizes=whole[0]) if whole else self.augment(images)
            return views, labels, index
        return batch

    def step_loss(
        self, views: list[Tensor], labels: Tensor, index: Tensor, step: int, epoch: int
    ) -> tuple[HeadOutput, list[Tensor]]:
        """The training step's forward: backbone on every view, teacher on the global views, head.

        Called by ``training_step`` (Lightning) and usable from a plain PyTorch loop; it logs
        nothing. A loop that steps the optimizer itself calls, in order: ``step_loss``,
        ``loss.backward()``, ``after_backward(step)``, ``optimizer.step()``,
        ``after_optimizer_step(step, total_steps)``.

        Args:
            views: V float views (B, 3, H, W) from ``augment``.
            labels: (B,) int64; handed to the head (only label-aware diagnostics read them).
            index: (B,) int64 sample positions in the training split.
            step: optimizer steps done before this one (Lightning's ``global_step``).
            epoch: the current epoch.

        Returns:
            the head's ``HeadOutput`` (``loss`` a scalar with gradient, ``logs``) and the backbone
            features V x (B, F).
        """
        feats = self.forward_views(views)
        if self._bn_stats is not None:
            self._bn_stats.save(self.backbone)
        teacher = None
        if self.teacher is not None:
            size = views[0].shape[-2:]
            with torch.no_grad():
                teacher = self.forward_views([v for v in views if v.shape[-2:] == size], self.teacher)
        info = BatchInfo(labels=labels, index=index, step=step, epoch=epoch)
        return self.head(Views(feats, teacher=teacher), info), feats

    def after_backward(self, step: int) -> None:
        """After ``loss.backward()``: restores BatchNorm statistics that gradient checkpointing ran
        twice, then the head's ``after_backward`` (e.g. SwAV's frozen prototypes)."""
        if self._bn_stats is not None:
            self._bn_stats.restore()
        self.head.after_backward(step)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """After ``optimizer.step()``: the teacher's EMA update with the head's ``teacher_momentum``,
        then the head's ``after_step`` (e.g. prototype re-normalization).

        Args:
            step: optimizer steps done before the one that just ran.
            total_steps: optimizer steps of the whole run (the momentum schedules run over it).
        """
        if self.teacher is not None:
            ema_update(self.teacher, self.backbone, self.head.teacher_momentum(step, total_steps))
        self.head.after_step(step, total_steps)

    def training_step(self, batch: tuple[list[Tensor], Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        views, labels, index = batch
        out, feats = self.step_loss(views, labels, index, self.global_step, self.current_epoch)
        batch_size = labels.shape[0]
        # Not prog_bar: Lightning turns progress-bar values into Python floats after EVERY step (a
        # host sync per step on a GPU); logged values are only read every log_every_n_steps.
        self.log("train/loss", out.loss, batch_size=batch_size)
        if out.logs:
            self.log_dict({f"train/{k}": v for k, v in out.logs.items()}, batch_size=batch_size)
        loss = out.loss
        if self._feature_losses:  # e.g. an online classifier: no gradient reaches the backbone
            size = views[0].shape[-2:]
            detached = [f.detach() for f, v in zip(feats, views) if v.shape[-2:] == size]
            loss = loss + sum(fn(detached, labels) for fn in self._feature_losses)
        return {"loss": loss, "feats": feats[0].detach()}

    def add_feature_loss(self, groups: list[dict[str, Any]], loss: Callable[[list[Tensor], Tensor], Tensor]) -> None:
        """Train parameters that live outside this module (an online classifier) with the recipe's
        optimizer and lr schedule, on detached features (solo-learn ``BaseMethod``: the classifier
        is a parameter group of the main optimizer and its loss is added to the SSL loss).

        ``groups`` (each ``{"params": [...], "lr": ..., "weight_decay": ...}``, optionally
        ``lars_adapt``) become more parameter groups of the optimizer that ``build_optimizer``
        returns, so the schedule scales their lr like the others. ``loss(feats, labels)`` -- with
        ``feats`` the backbone features (B, F) of every global view, detached, and ``labels`` (B,)
        -- is added to the training loss (not to ``train/loss``). Call before the optimizer is
        built (a callback's ``setup``).
        """
        self._extra_param_groups.extend(groups)
        self._feature_losses.append(loss)

    # --- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch: Batch | EvalBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Embed one batch of a validation loader for the evaluation callbacks.

        The loaders are those the callbacks planned (``ssl_toolkit.callbacks.eval_plan``); every
        batch is embedded as it asks (:class:`~ssl_toolkit.embedding.EvalBatch`: the images as
        they are, or seeded training-augmentation views), whichever callback asked for it.

        Returns:
            ``{"feats": backbone features in eval mode, (B, F) (``embed``) or (B, V, F) for V views
            (``embed_views``), "labels": (B,) int64, "index": (B,) int64 positions in the loader's
            split}``; the callbacks collect them in ``on_validation_batch_end``.
        """
        batch = EvalBatch(*batch)
        return {"feats": batch.embed(self), "labels": batch.labels.long(), "index": batch.index.long()}

    def setup(self, stage: str) -> None:
        exclude_identical_buffers_from_ddp(self)  # again: submodules may have been replaced since __init__

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every process's copy of per-process state (SwAV's queue) goes into the checkpoint
        (``checkpoint["per_process_state"]``; ``state_dict`` holds rank 0's). Runs on every process."""
        per_process = gather_per_process_state(self)
        if per_process:
            checkpoint[PER_PROCESS_KEY] = per_process

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before the state dict is loaded: each process takes its own per-process state."""
        if PER_PROCESS_KEY in checkpoint and "state_dict" in checkpoint:
            select_own_state(self, checkpoint["state_dict"], checkpoint[PER_PROCESS_KEY])

    def on_train_start(self) -> None:
        total = self.trainer.estimated_stepping_batches
        self._total_steps = int(total) if math.isfinite(total) else 0

    def on_after_backward(self) -> None:
        self.after_backward(self.global_step)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        step = self.global_step  # optimizer steps done before this one
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.after_optimizer_step(step, self._total_steps)

    def build_optimizer(self, global_batch_size: int) -> torch.optim.Optimizer:
        """The recipe's optimizer over this module's trainable parameters (``optim.param_groups`` with
        the factory's ``exclude_bias_n_norm``) and the groups of ``add_feature_loss``, its lr scaled
        to ``global_batch_size`` images per optimizer step (the factory's lr is per 256).
        ``configure_optimizers`` uses it; so can a plain loop."""
        factory = self.optimizer_factory
        groups = param_groups(self, factory.weight_decay, factory.exclude_bias_n_norm) + self._extra_param_groups
        return factory.build(groups, global_batch_size)

    def configure_optimizers(self) -> Any:
        trainer = self.trainer
        batch_size = int(trainer.datamodule.batch_size)
        global_batch = batch_size * trainer.world_size * trainer.accumulate_grad_batches
        optimizer = self.build_optimizer(global_batch)
        if self.scheduler_factory is None:
            return optimizer
        total = int(trainer.estimated_stepping_batches)  # also sets num_training_batches
        batches = trainer.num_training_batches
        per_epoch = total if batches == float("inf") else math.ceil(batches / trainer.accumulate_grad_batches)
        scheduler = self.scheduler_factory.build(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
